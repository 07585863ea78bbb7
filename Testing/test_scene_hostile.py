"""Hostile use of the Slicer side: late cancels, inputs removed mid-run, nodes that are no MR image or synthetic,
odd node names and misuse of the Python API.

Everything is real: a ``slicer-core`` MRML scene with real volume, label-map, vector,
segmentation and model nodes, real :class:`~MRISynthesisLib.core.jobs.Job` threads, and the real
engine with a tiny untrained torch bundle where the engine matters (elsewhere the job runs
a plain Python function that returns a real ``SynthesisResult``).
"""
from __future__ import annotations

import itertools
import re
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="needs slicer-core (the real MRML library)")

import vtk  # noqa: E402  (after the skip: slicer-core brings the matching VTK)
from vtk.util import numpy_support  # noqa: E402

from scene_support import scene_with_logics  # noqa: E402

from MRISynthesisLib.core import jobs
from MRISynthesisLib.core.pipeline import SynthesisResult, TargetResult  # noqa: E402
from MRISynthesisLib.sequences import SEQUENCES, Sequence  # noqa: E402
from MRISynthesisLib.core.bundles import ModelBundle  # noqa: E402
from MRISynthesisLib.scene.flow import add_case_nodes, synthesize_in_scene  # noqa: E402
from MRISynthesisLib.scene.geometry import update_volume_node_from_image, volume_node_from_image  # noqa: E402
from MRISynthesisLib.scene.inputs import copy_selected_inputs  # noqa: E402
from MRISynthesisLib.scene.nodes import ATTRIBUTE_PREFIX, MRMLInputError, is_output_node, node_label  # noqa: E402
from MRISynthesisLib.scene.results import ROLE_ERROR, ROLE_SYNTHETIC, add_result_nodes  # noqa: E402
from MRISynthesisLib.scene.validation_table import add_validation_nodes  # noqa: E402

WAIT_S = 30.0  # generous upper bound for a job to finish; never a timing assertion
CASE = "Hostile-001"
INPUTS = (Sequence.T1N, Sequence.T2W, Sequence.T2F)


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def scene():
    """A real MRML scene with the application, colour and volumes logics Slicer sets up."""
    env = scene_with_logics()
    env.scene.keep_logics = (*env.keep, env.volumes)  # alive as long as the scene object
    yield env.scene
    env.scene.Clear(1)


def brain_like(seed: int, size=(12, 11, 10), spacing=(2.5, 2.5, 2.5)) -> sitk.Image:
    """Positive voxels with a zero border (background), like a skull-stripped brain."""
    array = np.random.default_rng(seed).integers(1, 1000, size=tuple(reversed(size))).astype(np.float32)
    array[:, :, :2] = 0
    array[:2] = 0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -20.0, 5.0))
    return image


@pytest.fixture
def case(scene):
    """T1, T2 and FLAIR volumes of one case in a patient folder (T1c missing), as the data module places them."""
    hierarchy = scene.GetSubjectHierarchyNode()
    patient = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Patient 1")
    nodes = {}
    for seed, sequence in enumerate(INPUTS):
        node = volume_node_from_image(scene, brain_like(seed + 1), f"{CASE}-{sequence.value}")
        hierarchy.CreateItem(patient, node)
        nodes[sequence] = node
    return SimpleNamespace(scene=scene, nodes=nodes, patient=patient, hierarchy=hierarchy)


def mean_synthesis(images, bundle, targets=None, device="auto", progress=None, cancel=None, tumour_maps=True,
                   ground_truth=None, metrics_protocol="brain") -> SynthesisResult:
    """A plain function with ``pipeline.synthesize``'s signature and result: each target is the inputs' mean."""
    inputs = [Sequence(k) for k in images]
    wanted = [Sequence(t) for t in targets] if targets else [s for s in SEQUENCES if s not in inputs]
    mean = sitk.Cast(sum(sitk.Cast(images[s], sitk.sitkFloat32) for s in inputs) / len(inputs), sitk.sitkFloat32)
    out = {}
    for target in wanted:
        error = None
        if ground_truth and target in ground_truth:
            error = sitk.Abs(mean - sitk.Cast(ground_truth[target], sitk.sitkFloat32))
        out[target] = TargetResult(sequence=target, synthetic=mean, stage1=mean, error_map=error,
                                   metrics={"mae": 1.0} if error is not None else {})
    return SynthesisResult(targets=out, inputs=inputs, model_name=bundle.name, device=device, timings={},
                           messages=[])


MEAN_BUNDLE = ModelBundle(name="mean of inputs", stage1=None)


def tiny_bundle() -> ModelBundle:
    """A real, untrained HF-GAN small enough for the CPU (96 x 96 slices)."""
    import torch

    from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator

    torch.manual_seed(0)
    generator = HFGANGenerator(HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=96))
    return ModelBundle(name="tiny", stage1=generator.eval())


def run_job_while(function, during) -> jobs.Job:
    """Start a Job whose ``function`` waits for a gate, call ``during()`` while it waits, then let it finish."""
    gate = threading.Event()
    started = threading.Event()

    def gated(context):
        started.set()
        assert gate.wait(WAIT_S), "the test never released the job"
        return function(context)

    job = jobs.Job(gated, name="hostile").start()
    assert started.wait(WAIT_S)
    during()
    assert job.state is jobs.JobState.RUNNING
    gate.set()
    assert job.wait(WAIT_S) and job.state is jobs.JobState.SUCCEEDED, job.error
    return job


def input_references(node) -> list:
    """The IDs of a result node's ``MRISynthesis.Input`` references."""
    role = f"{ATTRIBUTE_PREFIX}.Input"
    return [node.GetNthNodeReferenceID(role, index) for index in range(node.GetNumberOfNodeReferences(role))]


def assert_references_resolve(scene, made, expected_nodes) -> None:
    """Every result node references exactly ``expected_nodes``, and each reference resolves in the scene."""
    expected = {node.GetID() for node in expected_nodes}
    for node in made.all_nodes():
        if node is made.table:
            continue
        ids = input_references(node)
        assert set(ids) == expected, node.GetName()
        for node_id in ids:
            referenced = scene.GetNodeByID(node_id)
            assert referenced is not None and scene.IsNodePresent(referenced), f"{node.GetName()} -> {node_id}"
        for index in range(node.GetNumberOfNodeReferences(f"{ATTRIBUTE_PREFIX}.Input")):
            assert node.GetNthNodeReference(f"{ATTRIBUTE_PREFIX}.Input", index) is not None


def assert_folder_holds(hierarchy, made, parent: int) -> None:
    """The result folder exists under ``parent`` and holds every result node."""
    assert made.folder_item and hierarchy.GetItemName(made.folder_item)
    assert hierarchy.GetItemParent(made.folder_item) == parent
    for node in made.all_nodes():
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == made.folder_item


def removal_line(node, sequence: Sequence) -> str:
    return (f"{node.GetName()} ({sequence.display_name} input) was removed from the scene during the run; "
            "the results keep its name but no reference to it")


# --------------------------------------------------------------------------- 1. cancel must win


def test_cancel_after_the_job_finished_but_before_claiming_drops_the_result():
    job = jobs.Job(lambda context: "a result nobody claimed yet").start()
    assert job.wait(WAIT_S) and job.state is jobs.JobState.SUCCEEDED

    job.cancel()  # the user clicks Cancel before the widget's next timer tick

    assert job.state is jobs.JobState.CANCELLED and job.done
    assert job.result is None and job.error is None
    assert job.take_result() is None
    assert not job.delivered
    assert any("cancelled" in event.message for event in job.poll() if event.kind == "log")


def test_cancel_after_claiming_keeps_the_result():
    release = threading.Event()
    job = jobs.Job(lambda context: release.wait(WAIT_S) and {"value": 42}).start()
    assert job.take_result() is None  # still running: nothing to claim yet
    release.set()
    assert job.wait(WAIT_S)

    claimed = job.take_result()
    job.cancel()

    assert claimed == {"value": 42} and job.delivered
    assert job.state is jobs.JobState.SUCCEEDED and job.result == {"value": 42}
    assert not job.cancel_requested
    assert job.take_result() is None  # delivered once only


def test_cancel_racing_the_end_of_many_jobs_never_both_delivers_and_cancels():
    """Jobs finish while a second thread cancels every other one and the main thread claims them all."""
    count = 300
    release = threading.Event()
    clock = itertools.count()  # next() is atomic under the GIL: orders cancel and claim calls
    job_list = [jobs.Job(lambda context, index=index: release.wait(WAIT_S) and ("result", index)).start()
                for index in range(count)]
    cancel_done: dict = {}
    cancel_start: dict = {}
    go = threading.Barrier(2)

    def canceller() -> None:
        go.wait(WAIT_S)
        for index in range(0, count, 2):
            cancel_start[index] = next(clock)
            job_list[index].cancel()
            cancel_done[index] = next(clock)

    thread = threading.Thread(target=canceller, daemon=True)
    thread.start()
    release.set()
    go.wait(WAIT_S)
    claims, claim_start, claim_done = {}, {}, {}
    for index, job in enumerate(job_list):
        assert job.wait(WAIT_S)
        claim_start[index] = next(clock)
        claims[index] = job.take_result()
        claim_done[index] = next(clock)
    thread.join(WAIT_S)

    for index, job in enumerate(job_list):
        delivered = claims[index] is not None
        if delivered:
            assert claims[index] == ("result", index)
            assert job.state is jobs.JobState.SUCCEEDED and job.delivered and job.result == ("result", index)
        else:
            assert job.state is jobs.JobState.CANCELLED and job.result is None and not job.delivered
        if index % 2:
            assert delivered  # never cancelled: always delivered
        elif cancel_done[index] < claim_start[index]:
            assert not delivered  # cancel returned before the claim began: cancel wins
        elif claim_done[index] < cancel_start[index]:
            assert delivered  # claimed before the cancel began: the result is kept


# --------------------------------------------------------------------------- 2. input removed while a job runs


def test_input_removed_while_the_real_engine_runs_leaves_no_dangling_reference(case):
    scene, nodes = case.scene, case.nodes
    flair = nodes[Sequence.T2F]
    selected_inputs = copy_selected_inputs(nodes)
    task = jobs.synthesis_task(selected_inputs.images, tiny_bundle(), targets=[Sequence.T1C], device="cpu",
                               tumour_maps=False)

    job = run_job_while(task, lambda: scene.RemoveNode(flair))
    made = add_result_nodes(scene, job.result, selected_inputs)

    synthetic = made.targets[Sequence.T1C].synthetic
    assert synthetic.GetAttribute("MRISynthesis.Inputs") == "t1n,t2w,t2f"  # the engine did use FLAIR
    assert_references_resolve(scene, made, [nodes[Sequence.T1N], nodes[Sequence.T2W]])
    assert f"T2-FLAIR ({CASE}-t2f, removed from the scene)" in synthetic.GetDescription()
    assert f"T1 ({CASE}-t1n)" in synthetic.GetDescription()
    assert made.messages == [removal_line(flair, Sequence.T2F)]
    assert_folder_holds(case.hierarchy, made, case.patient)
    assert np.isfinite(slicer.util.arrayFromVolume(synthetic)).all()


def test_reference_input_removed_puts_the_folder_beside_another_input(case):
    scene, nodes = case.scene, case.nodes
    selected_inputs = copy_selected_inputs(nodes)
    reference = nodes[selected_inputs.reference]
    task = jobs.synthesis_task(selected_inputs.images, MEAN_BUNDLE, synthesize=mean_synthesis)

    job = run_job_while(task, lambda: scene.RemoveNode(reference))
    made = add_result_nodes(scene, job.result, selected_inputs)

    assert_references_resolve(scene, made, [nodes[Sequence.T2W], nodes[Sequence.T2F]])
    assert made.messages == [removal_line(reference, selected_inputs.reference)]
    assert_folder_holds(case.hierarchy, made, case.patient)
    assert case.hierarchy.GetItemName(made.folder_item) == f"{CASE} synthetic T1c"


def test_every_input_removed_puts_the_folder_at_the_scene_level(case):
    scene, nodes = case.scene, case.nodes
    selected_inputs = copy_selected_inputs(nodes)
    task = jobs.synthesis_task(selected_inputs.images, MEAN_BUNDLE, synthesize=mean_synthesis)

    job = run_job_while(task, lambda: [scene.RemoveNode(node) for node in nodes.values()])
    made = add_result_nodes(scene, job.result, selected_inputs)

    assert_references_resolve(scene, made, [])
    assert made.messages == [removal_line(nodes[s], s) for s in INPUTS]
    assert_folder_holds(case.hierarchy, made, case.hierarchy.GetSceneItemID())
    description = made.targets[Sequence.T1C].synthetic.GetDescription()
    for sequence in INPUTS:
        assert f"{sequence.display_name} ({CASE}-{sequence.value}, removed from the scene)" in description


def test_input_removed_during_validation_leaves_no_dangling_reference(scene):
    hierarchy = scene.GetSubjectHierarchyNode()
    study = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Study")
    nodes = {}
    for seed, sequence in enumerate(SEQUENCES):
        nodes[sequence] = volume_node_from_image(scene, brain_like(seed + 1), f"{CASE}-{sequence.value}")
        hierarchy.CreateItem(study, nodes[sequence])
    selected_inputs = copy_selected_inputs(nodes)
    removed = nodes[Sequence.T2W]
    task = jobs.validation_task(selected_inputs.images, MEAN_BUNDLE, synthesize=mean_synthesis)

    job = run_job_while(task, lambda: scene.RemoveNode(removed))
    made = add_validation_nodes(scene, job.result, selected_inputs)

    for target in made.targets.values():
        for node in target.all_nodes():
            for node_id in input_references(node):
                referenced = scene.GetNodeByID(node_id)
                assert referenced is not None and scene.IsNodePresent(referenced), f"{node.GetName()} -> {node_id}"
            assert removed.GetID() not in input_references(node)
    assert made.messages == [removal_line(removed, Sequence.T2W)]  # once, not once per sequence
    assert_folder_holds(hierarchy, made, study)


# --------------------------------------------------------------------------- 3. nodes that are no MR image


def three_inputs(case, **replace) -> dict:
    """The case's three inputs with some slots replaced (``t2w=node``)."""
    selected = dict(case.nodes)
    selected.update({Sequence(key): node for key, node in replace.items()})
    return selected


def test_label_map_is_refused_with_its_name(case):
    label = volume_node_from_image(case.scene, sitk.Cast(brain_like(7) > 500, sitk.sitkUInt8),
                                        f"{CASE}-seg", class_name="vtkMRMLLabelMapVolumeNode")

    with pytest.raises(MRMLInputError, match=f"^{CASE}-seg: is a label map, not an MR image$"):
        copy_selected_inputs(three_inputs(case, t2w=label))


@pytest.mark.parametrize("role", [ROLE_SYNTHETIC, ROLE_ERROR])
def test_output_node_is_refused_as_an_input(case, role):
    selected_inputs = copy_selected_inputs(case.nodes)
    result = SynthesisResult(
        targets={Sequence.T1C: TargetResult(sequence=Sequence.T1C, synthetic=selected_inputs.images[Sequence.T1N],
                                            stage1=selected_inputs.images[Sequence.T1N],
                                            error_map=selected_inputs.images[Sequence.T2W])},
        inputs=list(INPUTS), model_name="earlier run", device="cpu", timings={}, messages=[])
    made = add_result_nodes(case.scene, result, selected_inputs).targets[Sequence.T1C]
    output = made.synthetic if role == ROLE_SYNTHETIC else made.error_map

    expected = (f"^{re.escape(output.GetName())}: is a synthetic volume made by MRISynthesis "
                f"\\({role}\\); select an acquired image$")
    with pytest.raises(MRMLInputError, match=expected):
        copy_selected_inputs({Sequence.T1N: case.nodes[Sequence.T1N], Sequence.T1C: output})


def vector_image_data(components: int) -> vtk.vtkImageData:
    """vtkImageData of 12 x 11 x 10 voxels with ``components`` positive values each."""
    array = np.random.default_rng(3).uniform(1.0, 100.0, (10 * 11 * 12, components)).astype(np.float32)
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(12, 11, 10)
    image_data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array, deep=True))
    return image_data


@pytest.mark.parametrize("class_name", ["vtkMRMLVectorVolumeNode", "vtkMRMLScalarVolumeNode"])
def test_vector_volume_is_refused_with_its_name(case, class_name):
    node = case.scene.AddNewNodeByClass(class_name, "colour map RGB")
    node.SetAndObserveImageData(vector_image_data(3))
    node.CreateDefaultDisplayNodes()

    with pytest.raises(MRMLInputError,
                       match=r"^colour map RGB: is a vector or multi-component volume \(.+\), not a scalar MR image$"):
        copy_selected_inputs(three_inputs(case, t2f=node))


@pytest.mark.parametrize("class_name, kind", [("vtkMRMLSegmentationNode", "a segmentation"),
                                              ("vtkMRMLModelNode", "a model")])
def test_node_of_another_class_is_refused_with_its_name(case, class_name, kind):
    node = case.scene.AddNewNodeByClass(class_name, "tumour outline")

    with pytest.raises(MRMLInputError, match=f"^tumour outline: is {kind}, not an MR image$"):
        copy_selected_inputs(three_inputs(case, t2w=node))


# --------------------------------------------------------------------------- 4. stale references and bad voxels


def test_node_removed_before_copying_is_refused_by_name(case):
    stale = case.nodes[Sequence.T2W]
    case.scene.RemoveNode(stale)  # the Python reference still reads its name and voxels
    assert stale.GetImageData() is not None

    expected = f"^{CASE}-t2w: is no longer in the scene \\(it was removed\\); select a volume that is in the scene$"
    with pytest.raises(MRMLInputError, match=expected):  # without a scene: the node's own is asked
        copy_selected_inputs(case.nodes)
    with pytest.raises(MRMLInputError, match=expected):
        copy_selected_inputs(case.nodes, case.scene)


def test_node_of_another_scene_is_refused_by_name(case):
    other_scene = slicer.vtkMRMLScene()
    stranger = volume_node_from_image(other_scene, brain_like(5), "other scene t2")

    with pytest.raises(MRMLInputError, match="^other scene t2: is no longer in the scene"):
        copy_selected_inputs(three_inputs(case, t2w=stranger), case.scene)


@pytest.mark.parametrize("spoil, problem", [
    ("nan", "NaN"), ("inf", "NaN or Inf"), ("zero", "empty volume"), ("constant", "constant volume"),
])
def test_node_with_unusable_voxels_is_refused_with_its_name(case, spoil, problem):
    array = sitk.GetArrayFromImage(brain_like(9))
    if spoil == "nan":
        array[5, 5, 5] = np.nan
    elif spoil == "inf":
        array[4, 4, 4] = np.inf
    else:
        array[:] = 0.0 if spoil == "zero" else 7.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.5, 2.5, 2.5))
    image.SetOrigin((10.0, -20.0, 5.0))
    bad = volume_node_from_image(case.scene, image, "scanner export FLAIR")

    with pytest.raises(MRMLInputError, match=f"^scanner export FLAIR: .*{problem}"):
        copy_selected_inputs(three_inputs(case, t2f=bad))


# ------------------------------------------------------------ 5. synthetic volumes without this module's tag


@pytest.fixture(params=[".nii.gz", ".nrrd"])
def extension(request):
    """File types Slicer loads with the archetype storage node and this tool writes."""
    return request.param


def test_synthetic_file_loaded_from_disk_is_refused_by_name(case, tmp_path, extension):
    from MRISynthesisLib.core import io

    path = tmp_path / f"BraTS-synthetic-t1c{extension}"
    io.write_image(brain_like(4), path, description="SYNTHETIC T1c volume - not an acquired image")
    loaded = case.scene.keep_logics[2].AddArchetypeVolume(str(path), "P-t1c", 0)  # as File > Add Data does
    assert loaded is not None and not is_output_node(loaded)

    expected = (f"^P-t1c: was loaded from {re.escape(str(path))}, a synthetic volume "
                r"\('SYNTHETIC T1c volume - not an acquired image'\); select an acquired image$")
    with pytest.raises(MRMLInputError, match=expected):
        copy_selected_inputs(three_inputs(case, t1c=loaded), case.scene)


def test_acquired_file_loaded_from_disk_is_accepted(case, tmp_path, extension):
    from MRISynthesisLib.core import io

    path = tmp_path / f"acquired-t1c{extension}"
    io.write_image(brain_like(4), path, description="acquired on scanner 3")
    loaded = case.scene.keep_logics[2].AddArchetypeVolume(str(path), "P-t1c", 0)

    selected_inputs = copy_selected_inputs(three_inputs(case, t1c=loaded), case.scene)

    assert selected_inputs.nodes[Sequence.T1C] is loaded


def test_node_described_as_synthetic_is_refused_by_name(case):
    node = volume_node_from_image(case.scene, brain_like(4), "FLAIR from elsewhere")
    node.SetDescription("SYNTHETIC FLAIR volume - made by another run\nsecond line")

    expected = (r"^FLAIR from elsewhere: its description says it is a synthetic volume "
                r"\('SYNTHETIC FLAIR volume - made by another run second line'\); select an acquired image$")
    with pytest.raises(MRMLInputError, match=expected):
        copy_selected_inputs(three_inputs(case, t2f=node))


# --------------------------------------------------------------------------- 6. nodes never added to a scene


def loose_node(name: str):
    """A volume node with voxels that was never added to any scene (no scene, no ID)."""
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    update_volume_node_from_image(node, brain_like(6))
    return node


def test_node_never_added_to_a_scene_is_not_called_removed(case):
    node = loose_node("loose t2")

    expected = "^loose t2: is not in a scene \\(it was never added to one\\); select a volume that is in the scene$"
    with pytest.raises(MRMLInputError, match=expected):
        copy_selected_inputs(three_inputs(case, t2w=node))
    with pytest.raises(MRMLInputError, match=expected):
        copy_selected_inputs(three_inputs(case, t2w=node), case.scene)


# ------------------------------------------------------------ 7. names with newlines and control characters


def test_node_label_is_one_line():
    node = loose_node("../x\n\r\tFLAIR\x1b[31m \u2028 end  ")
    assert node_label(node) == "../x FLAIR [31m end"
    scene = slicer.vtkMRMLScene()
    blank = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "\n\t \r")
    assert node_label(blank) == blank.GetID()


def test_refusal_of_a_node_with_a_multi_line_name_is_one_line(case):
    label = volume_node_from_image(case.scene, sitk.Cast(brain_like(7) > 500, sitk.sitkUInt8),
                                        "seg\nFLAIR\r\n", class_name="vtkMRMLLabelMapVolumeNode")

    with pytest.raises(MRMLInputError) as raised:
        copy_selected_inputs(three_inputs(case, t2f=label))

    assert str(raised.value) == "seg FLAIR: is a label map, not an MR image"


def test_result_names_are_one_line_for_multi_line_input_names(scene):
    nodes = {sequence: volume_node_from_image(scene, brain_like(index + 1), f"../x\n{sequence.value}")
             for index, sequence in enumerate(INPUTS)}
    selected_inputs = copy_selected_inputs(nodes)
    assert all(line.count("\n") == 0 for line in selected_inputs.messages)
    result = mean_synthesis(selected_inputs.images, MEAN_BUNDLE, targets=[Sequence.T1C])

    made = add_result_nodes(scene, result, selected_inputs)

    assert made.targets[Sequence.T1C].synthetic.GetName() == "../x T1c (synthetic)"
    assert scene.GetSubjectHierarchyNode().GetItemName(made.folder_item) == "../x synthetic T1c"
    assert "\n" not in made.targets[Sequence.T1C].synthetic.GetDescription()


def test_inputs_renamed_during_the_run_do_not_change_the_result_names(case):
    scene, nodes = case.scene, case.nodes
    selected_inputs = copy_selected_inputs(nodes)
    task = jobs.synthesis_task(selected_inputs.images, MEAN_BUNDLE, synthesize=mean_synthesis)

    def rename():
        for index, node in enumerate(nodes.values()):
            node.SetName(f"renamed {index}")

    job = run_job_while(task, rename)
    made = add_result_nodes(scene, job.result, selected_inputs)

    assert selected_inputs.base_name == CASE
    assert made.targets[Sequence.T1C].synthetic.GetName() == f"{CASE} T1c (synthetic)"
    assert case.hierarchy.GetItemName(made.folder_item) == f"{CASE} synthetic T1c"


# --------------------------------------------------------------------------- 8. Python API misuse


def test_copy_selected_inputs_needs_a_mapping(case):
    with pytest.raises(TypeError, match=r"^selected must be a mapping \{sequence: volume node\}.*got list"):
        copy_selected_inputs([case.nodes[Sequence.T1N]])


def test_copy_selected_inputs_needs_nodes_not_names(case):
    expected = r"^T1 input \(t1n\) must be an MRML volume node, got str \('P-t1n'\)$"
    with pytest.raises(TypeError, match=expected):
        copy_selected_inputs({Sequence.T1N: "P-t1n", Sequence.T2W: case.nodes[Sequence.T2W]})


def test_results_of_a_cancelled_job_are_refused_clearly(case):
    selected_inputs = copy_selected_inputs(case.nodes)
    job = jobs.Job(lambda context: mean_synthesis(selected_inputs.images, MEAN_BUNDLE)).start()
    assert job.wait(WAIT_S)
    job.cancel()
    result = job.take_result()
    assert result is None

    message = r"^no result to add \(the job was cancelled or failed\)$"
    with pytest.raises(ValueError, match=message):
        add_result_nodes(case.scene, result, selected_inputs)
    with pytest.raises(ValueError, match=message):
        add_validation_nodes(case.scene, result, selected_inputs)
    with pytest.raises(ValueError, match=message):
        add_validation_nodes(case.scene, [], selected_inputs)
    assert case.scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == len(INPUTS)


def test_validation_results_given_to_add_result_nodes_are_refused_clearly(case):
    selected_inputs = copy_selected_inputs(case.nodes)
    results = [mean_synthesis(selected_inputs.images, MEAN_BUNDLE, targets=[Sequence.T1N])]

    with pytest.raises(TypeError, match=r"^expected one SynthesisResult, got list; .*add_validation_nodes"):
        add_result_nodes(case.scene, results, selected_inputs)


def scene_contents(scene) -> tuple:
    """How many nodes and subject-hierarchy items the scene holds: unchanged after a refusal."""
    hierarchy = scene.GetSubjectHierarchyNode()
    return scene.GetNumberOfNodes(), hierarchy.GetNumberOfItems()


def test_selection_keys_are_parsed_as_sequence_names(case):
    t1, t2 = case.nodes[Sequence.T1N], case.nodes[Sequence.T2W]

    selected_inputs = copy_selected_inputs({"T1": t1, "t2w": t2})  # a short name and a suffix, not Sequence keys

    assert selected_inputs.nodes == {Sequence.T1N: t1, Sequence.T2W: t2}
    assert set(selected_inputs.images) == {Sequence.T1N, Sequence.T2W}


def test_selection_with_an_unknown_key_is_refused_by_name(case):
    t1, t2 = case.nodes[Sequence.T1N], case.nodes[Sequence.T2W]

    with pytest.raises(ValueError, match=r"^selected: unknown sequence 'T1x'; expected one of .*t1n \(T1\).*"
                                         r"t2f \(T2-FLAIR\)") as refused:
        copy_selected_inputs({"T1x": t1, "t2w": t2})
    assert "\n" not in str(refused.value)
    with pytest.raises(ValueError, match=r"^selected: unknown sequence 5; "):
        copy_selected_inputs({5: t1, Sequence.T2W: t2})


def test_selection_with_two_keys_for_one_sequence_is_refused(case):
    t1, t2 = case.nodes[Sequence.T1N], case.nodes[Sequence.T2W]

    with pytest.raises(ValueError, match=r"^selected: 'T1' and 't1n' both name the T1 input$"):
        copy_selected_inputs({"T1": t1, "t1n": t2})
    with pytest.raises(ValueError, match=r"^selected: 'flair' and 't2f' both name the FLAIR input$"):
        copy_selected_inputs({"flair": t2, Sequence.T2F: None, Sequence.T1N: t1})


def test_scene_entry_points_refuse_what_is_no_scene(case):
    selected_inputs = copy_selected_inputs(case.nodes)
    result = mean_synthesis(selected_inputs.images, MEAN_BUNDLE)
    before = scene_contents(case.scene)
    calls = []

    def synthesize(*args, **kwargs):
        calls.append(args)
        return mean_synthesis(*args, **kwargs)

    with pytest.raises(TypeError, match=r"^scene must be an MRML scene, got NoneType$"):
        add_result_nodes(None, result, selected_inputs)
    with pytest.raises(TypeError, match=r"^scene must be an MRML scene, got vtkMRMLScalarVolumeNode$"):
        add_result_nodes(case.nodes[Sequence.T1N], result, selected_inputs)
    with pytest.raises(TypeError, match=r"^scene must be an MRML scene, got NoneType$"):
        add_validation_nodes(None, [result], selected_inputs)
    with pytest.raises(TypeError, match=r"^scene must be an MRML scene, got NoneType$"):
        synthesize_in_scene(None, case.nodes, MEAN_BUNDLE, synthesize=synthesize)
    with pytest.raises(TypeError, match=r"^scene must be an MRML scene, got str$"):
        add_case_nodes("scene", {Sequence.T1N: brain_like(1)}, "Case")
    assert calls == []  # refused before any synthesis ran
    assert scene_contents(case.scene) == before


def test_stale_folder_item_is_refused_before_any_node_is_added(case):
    selected_inputs = copy_selected_inputs(case.nodes)
    result = mean_synthesis(selected_inputs.images, MEAN_BUNDLE)
    before = scene_contents(case.scene)

    for stale in (999999, 0, -1):
        with pytest.raises(ValueError, match=rf"^folder_item {stale} is not a subject-hierarchy item of this scene$"):
            add_result_nodes(case.scene, result, selected_inputs, folder_item=stale)
    with pytest.raises(TypeError, match=r"^folder_item must be a subject-hierarchy item ID \(int\), got str$"):
        add_result_nodes(case.scene, result, selected_inputs, folder_item="Patient 1")
    assert scene_contents(case.scene) == before

    made = add_result_nodes(case.scene, result, selected_inputs, folder_item=case.patient)  # a real item is used
    assert made.folder_item == case.patient
    for node in made.all_nodes():
        assert case.hierarchy.GetItemParent(case.hierarchy.GetItemByDataNode(node)) == case.patient


def test_folder_item_of_another_scene_is_refused(case):
    selected_inputs = copy_selected_inputs(case.nodes)
    result = mean_synthesis(selected_inputs.images, MEAN_BUNDLE)
    other = slicer.vtkMRMLScene()
    other_hierarchy = other.GetSubjectHierarchyNode()
    foreign = other_hierarchy.CreateFolderItem(other_hierarchy.GetSceneItemID(), "elsewhere")
    for _ in range(20):  # make the foreign ID one this scene does not have
        foreign = other_hierarchy.CreateFolderItem(foreign, "deeper")
    before = scene_contents(case.scene)

    with pytest.raises(ValueError, match=rf"^folder_item {foreign} is not a subject-hierarchy item of this scene$"):
        add_result_nodes(case.scene, result, selected_inputs, folder_item=foreign)
    assert scene_contents(case.scene) == before


def test_folder_name_of_the_wrong_type_is_refused_by_name(case):
    selected_inputs = copy_selected_inputs(case.nodes)
    result = mean_synthesis(selected_inputs.images, MEAN_BUNDLE)
    before = scene_contents(case.scene)

    with pytest.raises(TypeError, match=r"^folder_name must be a string, got int$"):
        add_result_nodes(case.scene, result, selected_inputs, folder_name=5)
    assert scene_contents(case.scene) == before


@pytest.mark.parametrize("spacing", [(0.0, 1.0, 1.0), (1.0, 1.0, 0.0)])
def test_a_node_with_zero_spacing_is_refused_by_name(spacing):
    from MRISynthesisLib.scene.geometry import volume_node_from_image
    from MRISynthesisLib.scene.inputs import copy_selected_inputs
    from MRISynthesisLib.scene.nodes import MRMLInputError

    scene = slicer.vtkMRMLScene()
    array = np.random.default_rng(0).uniform(1, 100, (6, 7, 8)).astype(np.float32)
    node = volume_node_from_image(scene, sitk.GetImageFromArray(array), "flat volume")
    node.SetSpacing(*spacing)
    with pytest.raises(MRMLInputError, match="flat volume.*degenerate geometry"):
        copy_selected_inputs({Sequence.T1N: node}, scene)
