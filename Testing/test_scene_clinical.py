"""A clinical study in the scene (real MRML scene from slicer-core): refused unprepared, prepared with a brain-mask
node (label map or segmentation) in a real worker process, results on the reference series' grid in the patient's
study, with the brain mask shown."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from scene_support import mrml_scene, node_array, node_matrix, snapshot  # noqa: F401 (mrml_scene is a fixture)

import slicer  # noqa: E402  (slicer-core, after scene_support's skip)

from MRISynthesisLib.phantom import generate_clinical_study, write_clinical_study
from MRISynthesisLib.scene.brain_mask_nodes import brain_mask_from_node
from MRISynthesisLib.scene.flow import SynthesisFailed, add_case_nodes, synthesize_in_scene
from MRISynthesisLib.scene.geometry import image_from_volume_node, volume_node_from_image
from MRISynthesisLib.sequences import Sequence

ACQUIRED = (Sequence.T1N, Sequence.T2W, Sequence.T2F)


@pytest.fixture(scope="module")
def study():
    return generate_clinical_study(11, small=True)


@pytest.fixture
def study_in_scene(mrml_scene, study):
    """The study's T1, T2 and FLAIR under a patient and a study item, as the DICOM browser loads them."""
    scene = mrml_scene.scene
    nodes = add_case_nodes(scene, {s: study.images[s] for s in ACQUIRED}, study.case_id)
    hierarchy = scene.GetSubjectHierarchyNode()
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Phantom^Clinical")
    study_item = hierarchy.CreateStudyItem(patient, "MR head")
    for node in nodes.values():  # slicer-core has no subject-hierarchy plugins to make the items: made here
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, study_item)
        else:
            hierarchy.CreateItem(study_item, node)
    mask = study.primary(Sequence.T1N).brain_mask  # the true brain mask on the T1 series' grid
    mask_node = volume_node_from_image(scene, mask, "brain mask", class_name="vtkMRMLLabelMapVolumeNode")
    return scene, nodes, mask_node, study_item


def test_an_unprepared_study_is_refused_by_the_worker_and_nothing_is_added(study_in_scene):
    scene, nodes, _, _ = study_in_scene
    count = scene.GetNumberOfNodes()
    with pytest.raises(SynthesisFailed) as failure:
        synthesize_in_scene(scene, nodes, "demo", device="cpu", backend="process")
    assert failure.value.code == "not-ready"
    assert any("not skull-stripped" in problem for problem in failure.value.problems)
    assert any("not co-registered" in problem for problem in failure.value.problems)
    assert scene.GetNumberOfNodes() == count


def test_prepared_in_a_worker_with_a_label_map_mask_lands_on_the_reference_grid_in_the_study(study_in_scene):
    scene, nodes, mask_node, study_item = study_in_scene
    before = {s: snapshot(node) for s, node in nodes.items()}
    made = synthesize_in_scene(scene, nodes, "demo", device="cpu", backend="process", prepare=True,
                               brain_mask=mask_node, bias_correction=False)
    synthetic = made.targets[Sequence.T1C].synthetic
    np.testing.assert_allclose(node_matrix(synthetic), node_matrix(nodes[Sequence.T1N]), atol=1e-6)
    assert node_array(synthetic).shape == node_array(nodes[Sequence.T1N]).shape
    assert made.brain_mask is not None and made.brain_mask.IsA("vtkMRMLLabelMapVolumeNode")
    shown, given = node_array(made.brain_mask) > 0, node_array(mask_node) > 0
    dice = 2 * np.count_nonzero(shown & given) / (np.count_nonzero(shown) + np.count_nonzero(given))
    assert dice > 0.95, f"the mask shown is the mask used (through the model space and back): Dice {dice:.3f}"
    hierarchy = scene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemParent(made.folder_item) == study_item, "results sit in the patient's study"
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(made.brain_mask)) == made.folder_item
    assert not node_array(synthetic)[~shown].any(), "nothing is synthesised outside the brain mask shown"
    assert {s: snapshot(node) for s, node in nodes.items()} == before, "inputs changed"


def test_a_segmentation_node_gives_the_same_mask_as_its_label_map(study_in_scene):
    scene, _, mask_node, _ = study_in_scene
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(mask_node, segmentation)
    from_segmentation = brain_mask_from_node(segmentation)
    from_label_map = image_from_volume_node(mask_node)
    resampled = sitk.Resample(from_segmentation, from_label_map, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(resampled) > 0, sitk.GetArrayFromImage(from_label_map) > 0)
    with pytest.raises(ValueError, match="a brain mask is a label map or a segmentation"):
        brain_mask_from_node(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode"))


def test_volumes_from_the_dicom_browser_are_recognised_by_their_tags(mrml_scene, tmp_path):
    """Volumes named as Slicer's DICOM loader names them, with neutral descriptions: the tags decide (the
    post-contrast T1 by its contrast agent); the localiser is never proposed."""
    import pydicom

    from MRISynthesisLib.clinical.dicom_study import read_series, scan_study
    from MRISynthesisLib.scene.assignment import fill_empty_slots
    from MRISynthesisLib.scene.dicom_nodes import INSTANCE_UIDS_ATTRIBUTE, dicom_recogniser
    from MRISynthesisLib.sequences import SEQUENCES

    folder = write_clinical_study(generate_clinical_study(12, small=True), tmp_path, dicom=True) / "dicom"
    database = {}
    for path in folder.rglob("*.dcm"):
        dataset = pydicom.dcmread(path)
        dataset.SeriesDescription = f"Series {dataset.SeriesNumber}"  # neutral: only the tags can tell
        dataset.ProtocolName = "clinical"
        dataset.save_as(path)
        database[str(dataset.SOPInstanceUID)] = str(path)
    scene = mrml_scene.scene
    nodes = {}
    for series in scan_study(folder).series:
        if len(series.files) < 3 or series.orientations > 1:
            continue  # the localiser's stacks are not volumes Slicer would load as one
        node = volume_node_from_image(scene, read_series(series), f"{series.number}: Series {series.number}")
        uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in series.files]
        node.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(uids))
        nodes[series.number] = (node, series)
    by_name = fill_empty_slots(dict.fromkeys(SEQUENCES), scene)
    assert all(node is None for node in by_name.values()), "the names alone say nothing"
    by_tags = fill_empty_slots(dict.fromkeys(SEQUENCES), scene, dicom_recogniser(database.get))
    expected = {s.sequence: nodes[s.series_number][0] for s in generate_clinical_study(12, small=True).series
                if s.series_number in nodes}
    assert by_tags == expected
