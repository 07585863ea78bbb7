"""Results in the scene, headless on the real MRML library: result nodes with names, provenance and folder
(``scene.results``), their display (``scene.display``), the validation table (``scene.validation_table``) and
whole cases loaded as volumes (``scene.flow``)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from scene_support import (  # noqa: F401 (mrml_scene is a fixture)
    assert_same_image,
    brain_like,
    load_case,
    make_result,
    mrml_scene,
    node_array,
    snapshot,
    write_case_files,
)

from vtk.util import numpy_support  # noqa: E402  (after the skip in scene_support)

from MRISynthesisLib import __version__  # noqa: E402
from MRISynthesisLib.scene.assignment import assign_sequences, candidate_input_nodes  # noqa: E402
from MRISynthesisLib.scene.display import (  # noqa: E402
    DIVERGING_COLOR_NAME,
    MAGNITUDE_COLOR_NAME,
    set_map_display,
    show_result,
    slice_composite_nodes,
)
from MRISynthesisLib.scene.flow import add_case_nodes, add_phantom_case, synthesize_in_scene  # noqa: E402
from MRISynthesisLib.scene.geometry import image_from_volume_node, volume_node_from_image  # noqa: E402
from MRISynthesisLib.scene.inputs import copy_selected_inputs  # noqa: E402
from MRISynthesisLib.scene.results import add_result_nodes  # noqa: E402
from MRISynthesisLib.scene.validation_table import add_validation_nodes, metrics_table_node  # noqa: E402
from MRISynthesisLib.sequences import SEQUENCES, Sequence  # noqa: E402


@pytest.fixture
def loaded_case(mrml_scene, tmp_path, make_volume):
    """Three BraTS-named inputs (T1, T2, FLAIR; no T1c) loaded as Slicer loads them, in a patient folder."""
    return load_case(mrml_scene, write_case_files(tmp_path, make_volume))


# --------------------------------------------------------------------------- result nodes


def test_result_nodes_names_provenance_folder_and_display(loaded_case):
    scene, nodes = loaded_case.scene, loaded_case.nodes
    before = {s: snapshot(n) for s, n in nodes.items()}
    selected_inputs = copy_selected_inputs(nodes)
    result = make_result(selected_inputs.images[Sequence.T1N])

    made = add_result_nodes(scene, result, selected_inputs)
    shown = show_result(scene, made)

    target = made.targets[Sequence.T1C]
    base = "BraTS-GLI-00001-000"
    assert target.synthetic.GetName() == f"{base} T1c (synthetic)"
    assert target.refinement_map.GetName() == f"{base} T1c refinement map"
    assert target.tumour_map.GetName() == f"{base} T1c tumour map"
    assert target.stage1 is None and target.error_map is None  # stage 1 not kept; no ground truth given
    for node, role in ((target.synthetic, "synthetic"), (target.refinement_map, "refinement map"),
                       (target.tumour_map, "tumour map")):
        assert node.GetAttribute("MRISynthesis.Role") == role
        assert node.GetAttribute("MRISynthesis.Sequence") == "t1c"
        assert node.GetAttribute("MRISynthesis.Model") == "test-bundle"
        assert node.GetAttribute("MRISynthesis.Inputs") == "t1n,t2w,t2f"
        assert node.GetAttribute("MRISynthesis.Version") == __version__
        description = node.GetDescription()
        assert "SYNTHETIC T1 contrast-enhanced" in description and "'test-bundle'" in description
        assert "T2-FLAIR (BraTS-GLI-00001-000-t2f)" in description
        referenced = {node.GetNthNodeReferenceID("MRISynthesis.Input", i)
                      for i in range(node.GetNumberOfNodeReferences("MRISynthesis.Input"))}
        assert referenced == {n.GetID() for n in nodes.values()}
    assert target.refinement_map.GetNodeReferenceID("MRISynthesis.Synthetic") == target.synthetic.GetID()

    # Geometry and voxels are the result's, exactly.
    assert_same_image(image_from_volume_node(target.synthetic), result.targets[Sequence.T1C].synthetic)
    assert_same_image(image_from_volume_node(target.refinement_map),
                      result.targets[Sequence.T1C].refinement_map)

    # Subject hierarchy: one new folder beside the inputs (same parent), holding every result node.
    hierarchy = scene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemParent(made.folder_item) == loaded_case.patient
    assert hierarchy.GetItemName(made.folder_item) == f"{base} synthetic T1c"
    for node in target.all_nodes():
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == made.folder_item

    # Display: grey window from brain percentiles; maps coloured, symmetric for the signed one.
    synthetic_array = sitk.GetArrayFromImage(result.targets[Sequence.T1C].synthetic)
    low, high = np.percentile(synthetic_array[synthetic_array != 0], (1.0, 99.5))
    display = target.synthetic.GetDisplayNode()
    assert not display.GetAutoWindowLevel()
    assert display.GetWindowLevelMin() == pytest.approx(low) and display.GetWindowLevelMax() == pytest.approx(high)
    refinement = np.abs(sitk.GetArrayFromImage(result.targets[Sequence.T1C].refinement_map))
    limit = np.percentile(refinement[refinement > 0], 99.0)
    map_display = target.refinement_map.GetDisplayNode()
    assert map_display.GetColorNode().GetName() == DIVERGING_COLOR_NAME
    assert map_display.GetWindowLevelMin() == pytest.approx(-limit)
    assert map_display.GetWindowLevelMax() == pytest.approx(limit)
    assert target.tumour_map.GetDisplayNode().GetColorNode().GetName() == MAGNITUDE_COLOR_NAME
    assert target.tumour_map.GetDisplayNode().GetWindowLevelMin() == pytest.approx(0.0)

    # Slice views: synthetic behind, refinement map in front at 40 %, linked.
    assert shown is target
    composites = slice_composite_nodes(scene)
    assert len(composites) == 3
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == target.synthetic.GetID()
        assert composite.GetForegroundVolumeID() == target.refinement_map.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.4)
        assert composite.GetLinkedControl()

    # Inputs bit-identical.
    assert {s: snapshot(n) for s, n in nodes.items()} == before


def test_keep_stage1_and_error_maps_and_two_targets(loaded_case):
    scene = loaded_case.scene
    nodes = {s: n for s, n in loaded_case.nodes.items() if s is not Sequence.T2W}
    selected_inputs = copy_selected_inputs(nodes)
    result = make_result(selected_inputs.images[Sequence.T1N], targets=(Sequence.T1C, Sequence.T2W),
                         inputs=(Sequence.T1N, Sequence.T2F), with_error=True)

    made = add_result_nodes(scene, result, selected_inputs, keep_stage1=True)
    show_result(scene, made, Sequence.T2W)

    assert set(made.targets) == {Sequence.T1C, Sequence.T2W}
    t2 = made.targets[Sequence.T2W]
    assert t2.stage1.GetName() == "BraTS-GLI-00001-000 T2 (synthetic, stage 1)"
    assert t2.stage1.GetAttribute("MRISynthesis.Role") == "stage1"
    assert t2.error_map.GetName() == "BraTS-GLI-00001-000 T2 error map"
    assert t2.error_map.GetAttribute("MRISynthesis.Inputs") == "t1n,t2f"
    assert_same_image(image_from_volume_node(t2.stage1), result.targets[Sequence.T2W].stage1)
    composite = slice_composite_nodes(scene)[0]
    assert composite.GetBackgroundVolumeID() == t2.synthetic.GetID()
    assert composite.GetForegroundVolumeID() == t2.error_map.GetID()  # validation: the error map in front
    # A second run of the same case keeps the first run's nodes and gets distinct names.
    again = add_result_nodes(scene, result, selected_inputs)
    assert again.targets[Sequence.T1C].synthetic.GetName() != made.targets[Sequence.T1C].synthetic.GetName()
    assert made.targets[Sequence.T1C].synthetic.GetScene() is scene


def test_map_colours_are_transparent_where_the_map_is_zero(mrml_scene, make_volume):
    """Run the display node's own colour pipeline: zero voxels must not tint the volume below."""
    scene = mrml_scene.scene
    array = np.zeros((4, 5, 6), dtype=np.float32)
    array[1, 2, 3], array[2, 2, 2], array[3, 4, 5], array[0, 1, 1] = 50.0, -50.0, 1.0, 20.0
    image = sitk.GetImageFromArray(array)
    node = volume_node_from_image(scene, image, "map")
    set_map_display(scene, node, image, signed=True)
    display = node.GetDisplayNode()
    display.SetInputImageDataConnection(node.GetImageDataConnection())
    producer = display.GetOutputImageDataConnection().GetProducer()
    producer.Update()
    rgba = numpy_support.vtk_to_numpy(producer.GetOutputDataObject(0).GetPointData().GetScalars())
    rgba = rgba.reshape(array.shape + (4,))

    assert (rgba[array == 0][:, 3] == 0).all()
    assert rgba[3, 4, 5, 3] == 0  # 2 % of the range: inside the transparent zone
    assert rgba[0, 1, 1, 3] == 255  # 40 % of the range: shown
    assert rgba[1, 2, 3, 3] == 255 and rgba[1, 2, 3, 0] > rgba[1, 2, 3, 2]  # positive: opaque, red
    assert rgba[2, 2, 2, 3] == 255 and rgba[2, 2, 2, 2] > rgba[2, 2, 2, 0]  # negative: opaque, blue
    # The colour table is created once per scene.
    set_map_display(scene, node, image, signed=True)
    tables = scene.GetNodesByClass("vtkMRMLColorTableNode")
    names = [tables.GetItemAsObject(i).GetName() for i in range(tables.GetNumberOfItems())]
    assert names.count(DIVERGING_COLOR_NAME) == 1


def test_metrics_table_has_one_row_per_sequence(mrml_scene, make_volume):
    reference = brain_like(make_volume, 1)
    results = [make_result(reference, targets=(sequence,), with_error=True)
               for sequence in (Sequence.T2F, Sequence.T1N)]

    table_node = metrics_table_node(mrml_scene.scene, results)

    table = table_node.GetTable()
    columns = [table.GetColumn(i).GetName() for i in range(table.GetNumberOfColumns())]
    assert columns == ["Sequence", "SSIM", "PSNR (dB)", "NMSE"]
    assert [table.GetValue(r, 0).ToString() for r in range(table.GetNumberOfRows())] == ["T1", "T2-FLAIR"]
    assert table.GetValue(0, 1).ToDouble() == pytest.approx(0.8)
    assert table.GetValue(1, 2).ToDouble() == pytest.approx(25.0)


def test_add_case_nodes_loads_sequences_and_label(mrml_scene, make_volume):
    images = {sequence: make_volume(seed=i) for i, sequence in enumerate(SEQUENCES)}
    label = sitk.Cast(make_volume(seed=9) > 500, sitk.sitkUInt8)

    nodes = add_case_nodes(mrml_scene.scene, images, "Phantom-001", label=label)

    assert [nodes[s].GetName() for s in SEQUENCES] == [f"Phantom-001-{s.value}" for s in SEQUENCES]
    assert nodes["label"].IsA("vtkMRMLLabelMapVolumeNode") and nodes["label"].GetName() == "Phantom-001-seg"
    assert_same_image(image_from_volume_node(nodes[Sequence.T2F]), images[Sequence.T2F])
    # Loaded this way, the case fills every slot by itself.
    assignment = assign_sequences(candidate_input_nodes(mrml_scene.scene))
    assert assignment.nodes == {s: nodes[s] for s in SEQUENCES}


def test_validation_nodes_share_one_folder_with_the_metrics_table(mrml_scene, make_volume):
    scene = mrml_scene.scene
    images = {s: brain_like(make_volume, i + 1) for i, s in enumerate(SEQUENCES)}
    nodes = add_case_nodes(scene, images, "Case-7")
    selected_inputs = copy_selected_inputs({s: nodes[s] for s in SEQUENCES})
    results = [make_result(selected_inputs.images[Sequence.T1N], targets=(target,),
                           inputs=[s for s in SEQUENCES if s is not target], with_error=True)
               for target in SEQUENCES]

    made = add_validation_nodes(scene, results, selected_inputs)
    shown = show_result(scene, made)

    hierarchy = scene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemName(made.folder_item) == "Case-7 validation"
    assert set(made.targets) == set(SEQUENCES)
    for node in made.all_nodes():
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == made.folder_item
    assert made.targets[Sequence.T2W].error_map.GetName() == "Case-7 T2 error map"
    assert made.targets[Sequence.T2W].synthetic.GetAttribute("MRISynthesis.Inputs") == "t1n,t1c,t2f"
    assert made.table.GetName() == "Case-7 validation metrics"
    assert made.table.GetTable().GetNumberOfRows() == 4
    assert shown is made.targets[Sequence.T1C]  # T1c is shown first


def test_synthesize_in_scene_runs_the_whole_flow_blocking(loaded_case):
    """Nodes -> images -> synthesis (a stand-in with the engine's signature) -> nodes, shown; no thread, no Qt."""
    scene, nodes = loaded_case.scene, loaded_case.nodes
    before = {s: snapshot(n) for s, n in nodes.items()}
    calls = []

    def synthesize(images, bundle, targets=None, device="auto", progress=None, cancel=None, tumour_maps=True,
                   ground_truth=None):
        calls.append((sorted(s.value for s in images), bundle, device, tumour_maps))
        return make_result(images[Sequence.T1N])

    lines = []
    made = synthesize_in_scene(scene, dict(nodes), "a bundle", device="cpu", tumour_maps=False,
                               synthesize=synthesize, log=lines.append)

    assert calls == [(["t1n", "t2f", "t2w"], "a bundle", "cpu", False)]
    assert lines[:3] == [f"{nodes[s].GetName()} used as {s.display_name}" for s in nodes]
    assert "a note" in lines  # the result's own messages reach the log
    target = made.targets[Sequence.T1C]
    assert target.synthetic.GetName() == "BraTS-GLI-00001-000 T1c (synthetic)"
    assert slice_composite_nodes(scene)[0].GetBackgroundVolumeID() == target.synthetic.GetID()
    assert {s: snapshot(n) for s, n in nodes.items()} == before


@pytest.mark.slow
def test_phantom_sample_case_loads_four_volumes_and_a_label_map(mrml_scene):
    from MRISynthesisLib import phantom

    nodes = add_phantom_case(mrml_scene.scene, seed=3, small=True)

    case = phantom.generate_case(3, small=True)
    for sequence in SEQUENCES:
        assert nodes[sequence].GetName() == f"{case.case_id}-{sequence.value}"
        assert_same_image(image_from_volume_node(nodes[sequence]), case.images[sequence])
    assert nodes["label"].IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(node_array(nodes["label"]), sitk.GetArrayViewFromImage(case.label))
    assignment = assign_sequences(candidate_input_nodes(mrml_scene.scene))
    assert assignment.nodes == {s: nodes[s] for s in SEQUENCES}


def test_validation_table_shows_the_brasyn_columns_of_a_real_validation(mrml_scene, tmp_path):
    """A real leave-one-out job (real tiny networks, the real pipeline) scored by the BraSyn protocol: the table
    in the scene has the BraSyn columns, titled, with the job's numbers, and says which protocol made them."""
    import torch
    import torchmetrics

    from MRISynthesisLib.core import jobs
    from MRISynthesisLib.core.bundles import save_bundle
    from MRISynthesisLib.metrics import BRASYN_METRICS, METRIC_TITLES
    from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator
    from MRISynthesisLib.models.refiner import Refiner, RefinerConfig
    from MRISynthesisLib.phantom import generate_case
    from MRISynthesisLib.scene.validation_table import PROTOCOL_ATTRIBUTE, TORCHMETRICS_ATTRIBUTE

    torch.manual_seed(0)
    generator = HFGANGenerator(HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=96))
    bundle = save_bundle(tmp_path / "bundle", "tiny-scene", generator, Refiner(RefinerConfig(channels=4)))
    scene = mrml_scene.scene
    case = generate_case(5, grid="small")
    nodes = add_case_nodes(scene, case.images, case.case_id)
    selected_inputs = copy_selected_inputs({s: nodes[s] for s in SEQUENCES})
    job = jobs.Job(jobs.validation_task(selected_inputs.images, str(bundle), device="cpu",
                                        metrics_protocol="brasyn")).start()
    assert job.wait(1200) and job.error is None, job.error

    made = add_validation_nodes(scene, job.result, selected_inputs)

    table = made.table.GetTable()
    columns = [table.GetColumn(i).GetName() for i in range(table.GetNumberOfColumns())]
    assert columns == ["Sequence"] + [METRIC_TITLES[key] for key in BRASYN_METRICS]
    assert columns[1:4] == ["SSIM whole", "SSIM tumour", "SSIM healthy"]
    assert made.table.GetAttribute(PROTOCOL_ATTRIBUTE) == "brasyn"
    assert made.table.GetAttribute(TORCHMETRICS_ATTRIBUTE) == torchmetrics.__version__
    by_sequence = {result_target: result.targets[result_target].metrics
                   for result in job.result for result_target in result.targets}
    names = [table.GetValue(r, 0).ToString() for r in range(table.GetNumberOfRows())]
    assert names == [s.display_name for s in SEQUENCES]
    for row, sequence in enumerate(SEQUENCES):
        ssim_whole = table.GetValue(row, 1).ToDouble()
        assert ssim_whole == pytest.approx(by_sequence[sequence]["ssim_whole"]) and 0.0 < ssim_whole <= 1.0
        assert np.isnan(table.GetValue(row, 2).ToDouble())  # no label map in the scene: no tumour region
    assert any("brasyn protocol (torchmetrics" in line for result in job.result for line in result.messages)
