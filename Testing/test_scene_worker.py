"""The module's blocking flow with the synthesis in a real worker process, on a real MRML scene (slicer-core).

What the Slicer panel does by default: nodes -> images -> worker process -> result nodes. The
nodes must match the in-process path's; a failed worker adds nothing and leaves the inputs as they were.
"""
from __future__ import annotations

import numpy as np
import pytest

from scene_support import mrml_scene, node_array, node_matrix, snapshot  # noqa: F401 (mrml_scene is a fixture)

from MRISynthesisLib.scene.flow import SynthesisFailed, add_phantom_case, synthesize_in_scene
from MRISynthesisLib.sequences import Sequence

ACQUIRED = (Sequence.T1N, Sequence.T2W, Sequence.T2F)


@pytest.fixture
def phantom_without_t1c(mrml_scene):
    nodes = add_phantom_case(mrml_scene.scene, seed=0, small=True)
    mrml_scene.scene.RemoveNode(nodes.pop(Sequence.T1C))
    return mrml_scene.scene, {s: nodes[s] for s in ACQUIRED}


def test_worker_process_and_thread_give_the_same_nodes(phantom_without_t1c):
    scene, inputs = phantom_without_t1c
    before = {s: snapshot(node) for s, node in inputs.items()}
    in_worker = synthesize_in_scene(scene, inputs, "demo", device="cpu", backend="process")
    in_thread = synthesize_in_scene(scene, inputs, "demo", device="cpu", backend="thread")
    assert {s: snapshot(node) for s, node in inputs.items()} == before, "inputs changed"
    worker_nodes, thread_nodes = in_worker.targets[Sequence.T1C], in_thread.targets[Sequence.T1C]
    assert worker_nodes.synthetic.GetName() == "Phantom-00000 T1c (synthetic)"
    assert worker_nodes.synthetic.GetAttribute("MRISynthesis.Model") == "demo"
    for worker_node, thread_node in ((worker_nodes.synthetic, thread_nodes.synthetic),
                                     (worker_nodes.refinement_map, thread_nodes.refinement_map)):
        np.testing.assert_array_equal(node_matrix(worker_node), node_matrix(thread_node))
        expected = node_array(thread_node)
        tolerance = 1e-5 * float(node_array(thread_nodes.synthetic).max() - node_array(thread_nodes.synthetic).min())
        np.testing.assert_allclose(node_array(worker_node), expected, rtol=0, atol=tolerance)


def test_a_failed_worker_adds_nothing(phantom_without_t1c):
    scene, inputs = phantom_without_t1c
    count = scene.GetNumberOfNodes()
    lines = []
    with pytest.raises(SynthesisFailed, match="no-such-model") as failure:
        synthesize_in_scene(scene, inputs, "no-such-model", device="cpu", backend="process", log=lines.append)
    assert "\n" not in str(failure.value) and "Traceback" in failure.value.details
    assert scene.GetNumberOfNodes() == count
    assert any("starting the synthesis process" in line for line in lines)


def test_backend_choice_is_checked(phantom_without_t1c):
    scene, inputs = phantom_without_t1c
    with pytest.raises(ValueError, match="backend must be one of thread, process"):
        synthesize_in_scene(scene, inputs, "demo", backend="subprocess")
    with pytest.raises(ValueError, match="only with backend='thread'"):
        synthesize_in_scene(scene, inputs, "demo", backend="process", synthesize=lambda *a, **k: None)
