"""Whole cases in the scene: a case's images loaded as named volumes (a phantom case too), and the module's
flow run blocking, without Qt or a thread (:func:`synthesize_in_scene`, for scripts and the self-test).

The Slicer widget runs the same steps in this order, with the synthesis in a worker process:

1. :func:`~MRISynthesisLib.scene.assignment.fill_empty_slots` fills the four input slots from node names;
2. :func:`~MRISynthesisLib.scene.inputs.copy_selected_inputs` copies the selected volumes into images
   on one grid (main thread);
3. :class:`MRISynthesisLib.worker.supervisor.ProcessJob` runs the synthesis on those images in a worker
   process (``backend="process"``; a :class:`~MRISynthesisLib.core.jobs.Job` thread of this process
   with ``backend="thread"``), no MRML either way;
4. :func:`~MRISynthesisLib.scene.results.add_result_nodes` turns the result into new nodes and
   :func:`~MRISynthesisLib.scene.display.show_result` displays them.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import SimpleITK as sitk

from ..core.jobs import JobFailure
from ..sequences import SEQUENCES, Sequence
from .display import set_volume_display, show_result
from .geometry import volume_node_from_image
from .inputs import copy_selected_inputs
from .nodes import check_scene
from .results import ResultNodes, add_result_nodes

__all__ = ["add_case_nodes", "add_phantom_case", "synthesize_in_scene", "BACKENDS", "SynthesisFailed"]

#: Where :func:`synthesize_in_scene` runs the networks: in this process, or in a worker process.
BACKENDS = ("thread", "process")


class SynthesisFailed(JobFailure):
    """A worker-process synthesis that failed: the one-line reason; ``details`` holds its log, ``code`` and
    ``problems`` say when the inputs need preparing (``"not-ready"``)."""


def add_case_nodes(scene: Any, images: Mapping[Any, sitk.Image], case_id: str,
                   label: sitk.Image | None = None) -> dict:
    """Load a case's images as ``<case>-t1n`` ... volumes (and ``<case>-seg`` label map) into the scene."""
    check_scene(scene)
    nodes: dict = {}
    for key in sorted(images, key=lambda k: SEQUENCES.index(Sequence(k))):
        sequence = Sequence(key)
        node = volume_node_from_image(scene, images[key], f"{case_id}-{sequence.value}")
        set_volume_display(node, images[key])
        nodes[sequence] = node
    if label is not None:
        nodes["label"] = volume_node_from_image(scene, sitk.Cast(label, sitk.sitkUInt8), f"{case_id}-seg",
                                                class_name="vtkMRMLLabelMapVolumeNode")
    return nodes


def add_phantom_case(scene: Any, seed: int = 0, small: bool = False) -> dict:
    """Generate a phantom case (:func:`MRISynthesisLib.phantom.generate_case`) and load it into the scene."""
    from ..phantom import generate_case

    check_scene(scene)  # before generating the case, not after
    case = generate_case(seed, small=small)
    return add_case_nodes(scene, case.images, case.case_id, label=case.label)


def synthesize_in_scene(scene: Any, selected: Mapping[Sequence, Any], bundle: Any, *, device: str = "auto",
                        keep_stage1: bool = False, tumour_maps: bool = True, targets=None,
                        synthesize: Callable | None = None, show: bool = True,
                        log: Callable[[str], None] | None = None, backend: str = "thread",
                        python: str | None = None, cpu_threads: int | None = None, prepare: bool = False,
                        brain_mask: Any = None, brain_extraction: str = "mask",
                        bias_correction: bool = False) -> ResultNodes:
    """The module's whole flow, blocking and without Qt: nodes -> images -> synthesis -> nodes.

    Used by the self-test and by scripts. ``backend="thread"`` runs the synthesis here (``synthesize``
    may replace the engine's); ``backend="process"`` runs it in a worker process as the module's panel
    does (``bundle`` then is a catalogue name or path; ``python`` the worker's interpreter) and raises
    :class:`SynthesisFailed` when the worker fails. Either way the inputs are checked first and refused
    when they are not what the model expects (:class:`~MRISynthesisLib.clinical.preconditions.
    PreconditionError`; ``SynthesisFailed`` with ``code == "not-ready"`` from a worker), unless ``prepare``
    (a clinical study: ``brain_mask`` a label-map or segmentation node, or ``brain_extraction="hd-bet"``),
    or a ``brain_mask`` alone skull-strips them. A ``scene`` that is no MRML scene is refused
    (TypeError) before anything is copied or synthesised; nothing is added unless the synthesis succeeded.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "process" and synthesize is not None:
        raise ValueError("a replacement synthesize function runs only with backend='thread'")
    check_scene(scene)
    say = log or (lambda text: None)
    selected_inputs = copy_selected_inputs(selected, scene)
    for line in selected_inputs.messages:
        say(line)
    mask = None
    if brain_mask is not None:
        from .brain_mask_nodes import brain_mask_from_node

        mask = brain_mask_from_node(brain_mask)
    study = dict(prepare=prepare, brain_mask=mask, brain_extraction=brain_extraction, bias_correction=bias_correction)
    if backend == "process":
        result = _synthesize_in_worker(selected_inputs.native, bundle, targets, device, tumour_maps, python,
                                       cpu_threads, say, dict(study, keep_stage1=keep_stage1))
    else:
        result = _synthesize_here(selected_inputs.native, bundle, targets, device, tumour_maps, synthesize, study)
    for line in list(result.messages):
        say(line)
    nodes = add_result_nodes(scene, result, selected_inputs, keep_stage1=keep_stage1)
    for line in nodes.messages:
        say(line)
    if show:
        show_result(scene, nodes)
    return nodes


def _synthesize_here(images: Mapping, bundle: Any, targets, device: str, tumour_maps: bool,
                     synthesize: Callable | None, study: dict) -> Any:
    """Check or prepare the inputs, then synthesise in this thread; a prepared study's result on its grid."""
    from ..clinical.study_run import StudyOptions, model_ready_inputs
    from ..core.bundles import load_bundle
    from ..core.jobs import JobContext, synthesis_task

    model = bundle
    if study["prepare"] and (bundle is None or isinstance(bundle, (str, bytes)) or hasattr(bundle, "__fspath__")):
        model = load_bundle(bundle)  # the model space is the model's own grid
    ready, prepared, _ = model_ready_inputs(images, model, StudyOptions(**study), device=str(device))
    result = synthesis_task(ready, model, targets=targets, device=device, tumour_maps=tumour_maps,
                            synthesize=synthesize)(JobContext())
    return prepared.result_on_grid(result) if prepared is not None else result


def _synthesize_in_worker(images: Mapping, bundle: Any, targets, device: str, tumour_maps: bool,
                          python: str | None, cpu_threads: int | None, say: Callable[[str], None],
                          study: dict) -> Any:
    """Run a :class:`~MRISynthesisLib.worker.supervisor.ProcessJob` to its end, relaying its log lines."""
    from ..worker.supervisor import ProcessJob

    job = ProcessJob(images, bundle, device=device, tumour_maps=tumour_maps, targets=targets, python=python,
                     cpu_threads=cpu_threads, **study).start()
    try:
        while not job.wait(0.1):
            for event in job.poll():
                if event.kind == "log":
                    say(event.message)
    except BaseException:
        job.cancel()  # Ctrl-C in a script: the worker must not go on alone
        job.wait()
        raise
    for event in job.poll():
        if event.kind == "log":
            say(event.message)
    result = job.take_result()
    if result is None:
        error = job.error
        raise SynthesisFailed(error.reason if error else f"the synthesis ended as {job.state.value}",
                              error.details if error else "", error.code if error else "",
                              error.problems if error else ())
    return result
