"""MRML side of the Slicer module, headless on the real MRML library (``slicer-core``).

Volumes are loaded the way Slicer loads them (``vtkSlicerVolumesLogic`` reading real NIfTI and
NRRD files) and compared with SimpleITK's own reading of the same files; result nodes are made
from real :class:`~MRISynthesisLib.core.pipeline.SynthesisResult` objects built from real images.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="needs slicer-core (the real MRML library)")
if not hasattr(slicer, "vtkSlicerVolumesLogic"):
    pytest.skip("the installed 'slicer' package has no vtkSlicerVolumesLogic", allow_module_level=True)

import vtk  # noqa: E402  (after the skip: slicer-core brings the matching VTK)
from vtk.util import numpy_support  # noqa: E402

from MRISynthesisLib import __version__  # noqa: E402
from MRISynthesisLib.scene import mrml  # noqa: E402
from MRISynthesisLib.core.pipeline import SynthesisResult, TargetResult  # noqa: E402
from MRISynthesisLib.sequences import SEQUENCES, Sequence  # noqa: E402

OBLIQUE_GEOMETRY = dict(spacing=(0.9, 1.1, 2.5), origin=(12.5, -30.0, 7.25))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def mrml_scene():
    """A scene with the logics Slicer sets up for loading volumes (application, colours, volumes)."""
    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    colours = slicer.vtkSlicerColorLogic()
    colours.SetMRMLApplicationLogic(application)
    colours.SetMRMLScene(scene)
    application.SetModuleLogic("Colors", colours)
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLApplicationLogic(application)
    volumes.SetMRMLScene(scene)
    application.SetModuleLogic("Volumes", volumes)
    for layout in ("Red", "Yellow", "Green"):  # what the application's layout adds for its slice views
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(layout)
        scene.AddNode(composite)
    yield SimpleNamespace(scene=scene, volumes=volumes, keep=(application, colours))
    scene.Clear(1)


def load_volume(env, path: Path, name: str):
    """Load a file as Slicer does (volumes logic, archetype reader)."""
    node = env.volumes.AddArchetypeVolume(str(path), name, 0)
    assert node is not None, f"volumes logic could not load {path}"
    return node


def node_array(node) -> np.ndarray:
    scalars = node.GetImageData().GetPointData().GetScalars()
    return numpy_support.vtk_to_numpy(scalars).reshape(tuple(reversed(node.GetImageData().GetDimensions())))


def node_matrix(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def snapshot(node) -> tuple:
    """Everything about an input node that must not change: voxels (bytes), matrix, name, attributes."""
    attributes = {name: node.GetAttribute(name) for name in node.GetAttributeNames() or ()}
    return node_array(node).tobytes(), node_matrix(node).tobytes(), node.GetName(), attributes


def assert_same_image(actual: sitk.Image, expected: sitk.Image) -> None:
    assert actual.GetSize() == expected.GetSize()
    assert actual.GetPixelID() == expected.GetPixelID()
    np.testing.assert_allclose(actual.GetSpacing(), expected.GetSpacing(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(actual.GetOrigin(), expected.GetOrigin(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(actual.GetDirection(), expected.GetDirection(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(actual), sitk.GetArrayViewFromImage(expected))


def brain_like(make_volume, seed: int, **geometry) -> sitk.Image:
    """A positive volume with a zero border (background), like a skull-stripped brain."""
    image = make_volume(size=(12, 11, 10), seed=seed, **geometry)
    array = sitk.GetArrayFromImage(image)
    array[:, :, :2] = 0
    array[:2] = 0
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def signed_map(reference: sitk.Image, seed: int) -> sitk.Image:
    array = np.random.default_rng(seed).normal(0.0, 20.0, sitk.GetArrayViewFromImage(reference).shape)
    array[sitk.GetArrayViewFromImage(reference) == 0] = 0.0
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.CopyInformation(reference)
    return image


def like(reference: sitk.Image, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def make_result(reference: sitk.Image, targets=(Sequence.T1C,), inputs=(Sequence.T1N, Sequence.T2W, Sequence.T2F),
                with_error: bool = False) -> SynthesisResult:
    """A real SynthesisResult (the pipeline's own dataclasses) from real images on ``reference``'s grid."""
    out = {}
    for index, sequence in enumerate(targets):
        synthetic = sitk.Cast(reference, sitk.sitkFloat32) * (1.0 + 0.1 * index)
        refinement = signed_map(reference, seed=10 + index)
        refinement_array = sitk.GetArrayFromImage(refinement)
        mask_array = (np.abs(refinement_array) > 25.0).astype(np.uint8)
        tumour = like(reference, (np.abs(refinement_array) * mask_array).astype(np.float32))
        error = like(reference, np.abs(sitk.GetArrayFromImage(signed_map(reference, seed=20 + index))))
        out[sequence] = TargetResult(
            sequence=sequence, synthetic=synthetic, stage1=synthetic - refinement,
            refinement_map=refinement, tumour_map=tumour, tumour_mask=like(reference, mask_array),
            error_map=error if with_error else None,
            metrics={"ssim": 0.8 + 0.01 * index, "psnr": 25.0 + index, "nmse": 0.05} if with_error else {},
        )
    return SynthesisResult(targets=out, inputs=list(inputs), model_name="test-bundle", device="cpu",
                           timings={"total_s": 1.0}, messages=["a note"])


@pytest.fixture
def case_on_disk(tmp_path, make_volume):
    """Three BraTS-named NIfTI inputs (T1, T2, FLAIR) on one grid; T1c is the missing one."""
    paths = {}
    for seed, sequence in enumerate((Sequence.T1N, Sequence.T2W, Sequence.T2F)):
        path = tmp_path / f"BraTS-GLI-00001-000-{sequence.value}.nii.gz"
        sitk.WriteImage(brain_like(make_volume, seed + 1, **OBLIQUE_GEOMETRY), str(path))
        paths[sequence] = path
    return paths


@pytest.fixture
def loaded_case(mrml_scene, case_on_disk):
    """The case loaded through the volumes logic, placed in a patient folder like Slicer's data module does."""
    scene = mrml_scene.scene
    hierarchy = scene.GetSubjectHierarchyNode()
    patient = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Patient 1")
    nodes = {}
    for sequence, path in case_on_disk.items():
        node = load_volume(mrml_scene, path, path.name.replace(".nii.gz", ""))
        hierarchy.CreateItem(patient, node)
        nodes[sequence] = node
    return SimpleNamespace(env=mrml_scene, scene=scene, nodes=nodes, patient=patient, paths=case_on_disk)


# --------------------------------------------------------------------------- geometry and voxels


@pytest.mark.parametrize(
    "filename, dtype, degrees",
    [("axial.nii.gz", np.float32, 0.0), ("oblique.nrrd", np.int16, 25.0), ("oblique.nii.gz", np.int16, -15.0)],
)
def test_slicer_loaded_volume_matches_simpleitk_reading(mrml_scene, tmp_path, make_volume, rotation,
                                                       filename, dtype, degrees):
    image = make_volume(dtype=dtype, direction=rotation(degrees, "y"), **OBLIQUE_GEOMETRY)
    path = tmp_path / filename
    sitk.WriteImage(image, str(path))
    node = load_volume(mrml_scene, path, "input")

    converted = mrml.image_from_volume_node(node)

    assert_same_image(converted, sitk.ReadImage(str(path)))


def test_image_to_node_and_back_keeps_geometry_and_voxels(mrml_scene, tmp_path, make_volume, rotation):
    image = make_volume(direction=rotation(30, "z"), **OBLIQUE_GEOMETRY)
    node = mrml.volume_node_from_image(mrml_scene.scene, image, "from image")

    assert_same_image(mrml.image_from_volume_node(node), image)
    # Independent check: Slicer's own writer saves the node, SimpleITK reads the file.
    storage = node.CreateDefaultStorageNode()
    path = tmp_path / "saved.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    assert_same_image(sitk.ReadImage(str(path)), image)


def test_linear_parent_transform_is_part_of_the_geometry(mrml_scene, tmp_path, make_volume, rotation):
    path = tmp_path / "moved.nrrd"
    sitk.WriteImage(make_volume(direction=rotation(10, "x"), **OBLIQUE_GEOMETRY), str(path))
    node = load_volume(mrml_scene, path, "moved")
    transform = mrml_scene.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 10.0)
    matrix.SetElement(2, 3, -4.0)
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())

    with_transform = mrml.image_from_volume_node(node)
    assert slicer.vtkSlicerTransformLogic.hardenTransform(node)  # Slicer applies the transform itself
    hardened = mrml.image_from_volume_node(node)

    assert_same_image(with_transform, hardened)
    np.testing.assert_allclose(np.subtract(with_transform.GetOrigin(), sitk.ReadImage(str(path)).GetOrigin()),
                               (-10.0, 0.0, -4.0), atol=1e-6)  # RAS +10 mm right is LPS -10 mm


def test_non_linear_parent_transform_is_refused(mrml_scene, make_volume):
    node = mrml.volume_node_from_image(mrml_scene.scene, make_volume(), "warped")
    transform = mrml_scene.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(mrml.MRMLInputError, match="warped: is under a non-linear transform"):
        mrml.image_from_volume_node(node)


def test_node_without_voxels_is_refused_with_its_name(mrml_scene):
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty one")
    with pytest.raises(mrml.MRMLInputError, match="^empty one: volume node holds no voxels$"):
        mrml.image_from_volume_node(node)


# --------------------------------------------------------------------------- choosing inputs


def add_named_volumes(scene, names, make_volume):
    return {name: mrml.volume_node_from_image(scene, make_volume(seed=i), name) for i, name in enumerate(names)}


def test_auto_assignment_picks_typical_names(mrml_scene, make_volume):
    nodes = add_named_volumes(mrml_scene.scene, [
        "BraTS-GLI-00001-000-t1n", "T1 post Gd", "Ax T2 FSE", "AX T2 FLAIR", "localizer"], make_volume)

    assignment = mrml.assign_sequences(mrml.candidate_input_nodes(mrml_scene.scene))

    assert assignment.nodes == {
        Sequence.T1N: nodes["BraTS-GLI-00001-000-t1n"], Sequence.T1C: nodes["T1 post Gd"],
        Sequence.T2W: nodes["Ax T2 FSE"], Sequence.T2F: nodes["AX T2 FLAIR"]}
    assert assignment.unrecognised == ["localizer"]
    assert assignment.notes() == []


def test_auto_assignment_leaves_ambiguous_slots_empty(mrml_scene, make_volume):
    nodes = add_named_volumes(mrml_scene.scene, ["t1_t2_fusion", "T2 a", "T2 b", "flair"], make_volume)

    assignment = mrml.assign_sequences(mrml.candidate_input_nodes(mrml_scene.scene))

    assert assignment.nodes[Sequence.T1N] is None and assignment.nodes[Sequence.T1C] is None
    assert assignment.nodes[Sequence.T2W] is None  # two candidates: the user must choose
    assert assignment.nodes[Sequence.T2F] is nodes["flair"]
    assert assignment.ambiguous == {Sequence.T2W: ["T2 a", "T2 b"]}
    assert "t1_t2_fusion" in assignment.unrecognised
    assert assignment.notes() == ["2 volumes look like T2 (T2 a, T2 b): choose one"]


def test_label_maps_and_outputs_are_not_candidates(mrml_scene, make_volume):
    scene = mrml_scene.scene
    t1 = mrml.volume_node_from_image(scene, make_volume(), "case-t1n")
    mrml.volume_node_from_image(scene, make_volume(), "case-t1c-seg", class_name="vtkMRMLLabelMapVolumeNode")
    output = mrml.volume_node_from_image(scene, make_volume(), "case T1c (synthetic)")
    output.SetAttribute("MRISynthesis.Role", mrml.ROLE_SYNTHETIC)

    assert mrml.candidate_input_nodes(scene) == [t1]


def test_fill_empty_slots_keeps_the_users_choice(mrml_scene, make_volume):
    nodes = add_named_volumes(mrml_scene.scene, ["case-t1n", "case-t2w", "other scan"], make_volume)
    current = {Sequence.T1N: None, Sequence.T1C: None, Sequence.T2W: nodes["other scan"], Sequence.T2F: None}

    filled = mrml.fill_empty_slots(current, mrml_scene.scene)

    assert filled[Sequence.T1N] is nodes["case-t1n"]
    assert filled[Sequence.T2W] is nodes["other scan"]  # not replaced by the better-named case-t2w
    assert filled[Sequence.T1C] is None and filled[Sequence.T2F] is None


def test_assignment_notes_explain_empty_slots(mrml_scene, make_volume):
    nodes = add_named_volumes(mrml_scene.scene, ["T2 a", "T2 b", "flair"], make_volume)
    selected = {Sequence.T1N: None, Sequence.T1C: None, Sequence.T2W: None, Sequence.T2F: nodes["flair"]}

    assert mrml.assignment_notes(selected, mrml_scene.scene) == ["2 volumes look like T2 (T2 a, T2 b): choose one"]
    selected[Sequence.T2W] = nodes["T2 b"]  # the user chose: no note any more
    assert mrml.assignment_notes(selected, mrml_scene.scene) == []


def test_selection_state_names_the_targets_and_says_why_not():
    node = object()
    three = {Sequence.T1N: node, Sequence.T1C: None, Sequence.T2W: node, Sequence.T2F: node}
    state = mrml.selection_state(three)
    assert state.synthesize_enabled and state.synthesize_text == "Synthesize T1c"
    assert state.missing_text == "Missing: T1 contrast-enhanced"
    assert not state.validate_enabled and "all four" in state.validate_tooltip

    two = {Sequence.T1N: node, Sequence.T1C: None, Sequence.T2W: None, Sequence.T2F: node}
    assert mrml.selection_state(two).synthesize_text == "Synthesize T1c + T2"

    none = mrml.selection_state(dict.fromkeys(SEQUENCES))
    assert not none.synthesize_enabled and "Select at least one input" in none.synthesize_tooltip

    full = mrml.selection_state(dict.fromkeys(SEQUENCES, node))
    assert not full.synthesize_enabled and full.validate_enabled
    assert full.missing_text == "All four sequences are present."

    no_model = mrml.selection_state(three, model_problem="No model installed.")
    assert not no_model.synthesize_enabled and no_model.synthesize_tooltip == "No model installed."
    assert not mrml.selection_state(three, busy=True).synthesize_enabled


# --------------------------------------------------------------------------- inputs for the engine


def test_prepare_inputs_copies_and_resamples_onto_the_first_input(mrml_scene, tmp_path, make_volume, rotation):
    t1_image = make_volume(direction=rotation(20, "x"), **OBLIQUE_GEOMETRY)
    t2_image = make_volume(seed=3, spacing=(1.0, 1.0, 1.0), origin=OBLIQUE_GEOMETRY["origin"])
    for name, image in (("case-t1n.nrrd", t1_image), ("case-t2w.nii.gz", t2_image)):
        sitk.WriteImage(image, str(tmp_path / name))
    t1 = load_volume(mrml_scene, tmp_path / "case-t1n.nrrd", "case-t1n")
    t2 = load_volume(mrml_scene, tmp_path / "case-t2w.nii.gz", "case-t2w")
    before = [snapshot(t1), snapshot(t2)]

    prepared = mrml.prepare_inputs({Sequence.T1N: t1, Sequence.T1C: None, Sequence.T2W: t2, Sequence.T2F: None})

    assert prepared.reference is Sequence.T1N and set(prepared.images) == {Sequence.T1N, Sequence.T2W}
    assert_same_image(prepared.images[Sequence.T1N], t1_image)
    resampled = sitk.Resample(t2_image, t1_image, sitk.Transform(), sitk.sitkLinear, 0.0, t2_image.GetPixelID())
    assert_same_image(prepared.images[Sequence.T2W], resampled)
    assert any(line.startswith("T2 resampled onto the T1 grid") for line in prepared.messages)
    assert "case-t2w used as T2" in prepared.messages
    assert prepared.base_name == "case"
    assert [snapshot(t1), snapshot(t2)] == before


def test_prepare_inputs_refuses_one_node_in_two_slots(mrml_scene, make_volume):
    node = mrml.volume_node_from_image(mrml_scene.scene, make_volume(), "scan")
    with pytest.raises(mrml.MRMLInputError, match="^scan: selected as both T1 and T2$"):
        mrml.prepare_inputs({Sequence.T1N: node, Sequence.T2W: node})
    with pytest.raises(mrml.MRMLInputError, match="no input volume selected"):
        mrml.prepare_inputs(dict.fromkeys(SEQUENCES))


@pytest.mark.parametrize("names, expected", [
    (["BraTS-GLI-00001-000-t1n", "BraTS-GLI-00001-000-t2w"], "BraTS-GLI-00001-000"),
    (["BraTS2021_00000_t1", "BraTS2021_00000_t1ce", "BraTS2021_00000_flair"], "BraTS2021_00000"),
    (["Ax T2 FLAIR", "Ax T1"], "fallback"),  # "Ax" is too short to name a case
    (["MRHead"], "fallback"),
])
def test_case_base_name(names, expected):
    assert mrml.case_base_name(names, "fallback") == expected


# --------------------------------------------------------------------------- result nodes


def test_result_nodes_names_provenance_folder_and_display(loaded_case):
    scene, nodes = loaded_case.scene, loaded_case.nodes
    before = {s: snapshot(n) for s, n in nodes.items()}
    prepared = mrml.prepare_inputs(nodes)
    result = make_result(prepared.images[Sequence.T1N])

    made = mrml.add_result_nodes(scene, result, prepared)
    shown = mrml.show_result(scene, made)

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
    assert_same_image(mrml.image_from_volume_node(target.synthetic), result.targets[Sequence.T1C].synthetic)
    assert_same_image(mrml.image_from_volume_node(target.refinement_map),
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
    assert map_display.GetColorNode().GetName() == mrml.DIVERGING_COLOR_NAME
    assert map_display.GetWindowLevelMin() == pytest.approx(-limit)
    assert map_display.GetWindowLevelMax() == pytest.approx(limit)
    assert target.tumour_map.GetDisplayNode().GetColorNode().GetName() == mrml.MAGNITUDE_COLOR_NAME
    assert target.tumour_map.GetDisplayNode().GetWindowLevelMin() == pytest.approx(0.0)

    # Slice views: synthetic behind, refinement map in front at 40 %, linked.
    assert shown is target
    composites = mrml.slice_composite_nodes(scene)
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
    prepared = mrml.prepare_inputs(nodes)
    result = make_result(prepared.images[Sequence.T1N], targets=(Sequence.T1C, Sequence.T2W),
                         inputs=(Sequence.T1N, Sequence.T2F), with_error=True)

    made = mrml.add_result_nodes(scene, result, prepared, keep_stage1=True)
    mrml.show_result(scene, made, Sequence.T2W)

    assert set(made.targets) == {Sequence.T1C, Sequence.T2W}
    t2 = made.targets[Sequence.T2W]
    assert t2.stage1.GetName() == "BraTS-GLI-00001-000 T2 (synthetic, stage 1)"
    assert t2.stage1.GetAttribute("MRISynthesis.Role") == "stage1"
    assert t2.error_map.GetName() == "BraTS-GLI-00001-000 T2 error map"
    assert t2.error_map.GetAttribute("MRISynthesis.Inputs") == "t1n,t2f"
    assert_same_image(mrml.image_from_volume_node(t2.stage1), result.targets[Sequence.T2W].stage1)
    composite = mrml.slice_composite_nodes(scene)[0]
    assert composite.GetBackgroundVolumeID() == t2.synthetic.GetID()
    assert composite.GetForegroundVolumeID() == t2.error_map.GetID()  # validation: the error map in front
    # A second run of the same case keeps the first run's nodes and gets distinct names.
    again = mrml.add_result_nodes(scene, result, prepared)
    assert again.targets[Sequence.T1C].synthetic.GetName() != made.targets[Sequence.T1C].synthetic.GetName()
    assert made.targets[Sequence.T1C].synthetic.GetScene() is scene


def test_map_colours_are_transparent_where_the_map_is_zero(mrml_scene, make_volume):
    """Run the display node's own colour pipeline: zero voxels must not tint the volume below."""
    scene = mrml_scene.scene
    array = np.zeros((4, 5, 6), dtype=np.float32)
    array[1, 2, 3], array[2, 2, 2], array[3, 4, 5], array[0, 1, 1] = 50.0, -50.0, 1.0, 20.0
    image = sitk.GetImageFromArray(array)
    node = mrml.volume_node_from_image(scene, image, "map")
    mrml.set_map_display(scene, node, image, signed=True)
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
    mrml.set_map_display(scene, node, image, signed=True)
    tables = scene.GetNodesByClass("vtkMRMLColorTableNode")
    names = [tables.GetItemAsObject(i).GetName() for i in range(tables.GetNumberOfItems())]
    assert names.count(mrml.DIVERGING_COLOR_NAME) == 1


def test_metrics_table_has_one_row_per_sequence(mrml_scene, make_volume):
    reference = brain_like(make_volume, 1)
    results = [make_result(reference, targets=(sequence,), with_error=True) for sequence in (Sequence.T2F, Sequence.T1N)]

    table_node = mrml.metrics_table_node(mrml_scene.scene, results)

    table = table_node.GetTable()
    columns = [table.GetColumn(i).GetName() for i in range(table.GetNumberOfColumns())]
    assert columns == ["Sequence", "SSIM", "PSNR (dB)", "NMSE"]
    assert [table.GetValue(r, 0).ToString() for r in range(table.GetNumberOfRows())] == ["T1", "T2-FLAIR"]
    assert table.GetValue(0, 1).ToDouble() == pytest.approx(0.8)
    assert table.GetValue(1, 2).ToDouble() == pytest.approx(25.0)


def test_add_case_nodes_loads_sequences_and_label(mrml_scene, make_volume):
    images = {sequence: make_volume(seed=i) for i, sequence in enumerate(SEQUENCES)}
    label = sitk.Cast(make_volume(seed=9) > 500, sitk.sitkUInt8)

    nodes = mrml.add_case_nodes(mrml_scene.scene, images, "Phantom-001", label=label)

    assert [nodes[s].GetName() for s in SEQUENCES] == [f"Phantom-001-{s.value}" for s in SEQUENCES]
    assert nodes["label"].IsA("vtkMRMLLabelMapVolumeNode") and nodes["label"].GetName() == "Phantom-001-seg"
    assert_same_image(mrml.image_from_volume_node(nodes[Sequence.T2F]), images[Sequence.T2F])
    # Loaded this way, the case fills every slot by itself.
    assignment = mrml.assign_sequences(mrml.candidate_input_nodes(mrml_scene.scene))
    assert assignment.nodes == {s: nodes[s] for s in SEQUENCES}


def test_validation_nodes_share_one_folder_with_the_metrics_table(mrml_scene, make_volume):
    scene = mrml_scene.scene
    images = {s: brain_like(make_volume, i + 1) for i, s in enumerate(SEQUENCES)}
    nodes = mrml.add_case_nodes(scene, images, "Case-7")
    prepared = mrml.prepare_inputs({s: nodes[s] for s in SEQUENCES})
    results = [make_result(prepared.images[Sequence.T1N], targets=(target,),
                           inputs=[s for s in SEQUENCES if s is not target], with_error=True)
               for target in SEQUENCES]

    made = mrml.add_validation_nodes(scene, results, prepared)
    shown = mrml.show_result(scene, made)

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


@pytest.mark.slow
def test_phantom_sample_case_loads_four_volumes_and_a_label_map(mrml_scene):
    from MRISynthesisLib import phantom

    nodes = mrml.add_phantom_case(mrml_scene.scene, seed=3, small=True)

    case = phantom.generate_case(3, small=True)
    for sequence in SEQUENCES:
        assert nodes[sequence].GetName() == f"{case.case_id}-{sequence.value}"
        assert_same_image(mrml.image_from_volume_node(nodes[sequence]), case.images[sequence])
    assert nodes["label"].IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(node_array(nodes["label"]), sitk.GetArrayViewFromImage(case.label))
    assignment = mrml.assign_sequences(mrml.candidate_input_nodes(mrml_scene.scene))
    assert assignment.nodes == {s: nodes[s] for s in SEQUENCES}
