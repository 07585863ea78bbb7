"""Brain extraction by a Slicer extension (*Swiss Skull Stripper*, *HD Brain Extraction*) on a real MRML scene.

The extensions cannot run outside the Slicer application, so each is replaced by a stand-in with its
published interface, which these tests also pin down: the command-line module's parameter names and
node classes (from its module description) and ``slicer.cli.runSync``'s contract (a command-line
module node returned, or an exception), and the scripted module's ``<Module>Logic`` with
``setupPythonRequirements()`` and ``process(inputVolume, outputVolume, outputSegmentation, device)``.
The stand-ins make the phantom's true brain mask (or a bad one) from the volume they are given; what
is tested is our side: the right calls, the mask node read back through MRML, checked, named and
placed, failures in one line with nothing left behind, and the mask then used to prepare the study.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from scene_support import mrml_scene, node_array, node_matrix  # noqa: F401 (mrml_scene is a fixture)

import slicer  # noqa: E402  (slicer-core, after scene_support's skip)

from MRISynthesisLib.clinical.brain_masks import BrainExtractionError
from MRISynthesisLib.phantom import generate_clinical_study
from MRISynthesisLib.scene.brain_extraction_modules import (
    SWISS_PARAMETERS,
    extension_brain_mask,
    installed_extension_backends,
    needs_consent,
)
from MRISynthesisLib.scene.flow import add_case_nodes, synthesize_in_scene
from MRISynthesisLib.scene.geometry import image_from_volume_node, update_volume_node_from_image
from MRISynthesisLib.sequences import Sequence

ACQUIRED = (Sequence.T1N, Sequence.T2W, Sequence.T2F)
#: Node classes of the Swiss Skull Stripper's parameters (its module description: image, image, label image).
SWISS_CLASSES = {"patientVolume": "vtkMRMLScalarVolumeNode", "patientOutputVolume": "vtkMRMLScalarVolumeNode",
                 "patientMaskLabel": "vtkMRMLLabelMapVolumeNode"}


@pytest.fixture(scope="module")
def study():
    return generate_clinical_study(13, small=True)


def true_mask_on(study, image: sitk.Image) -> sitk.Image:
    """The study's true brain mask of the T1 series (where the reference volume lies) on ``image``'s grid."""
    return sitk.Resample(study.primary(Sequence.T1N).brain_mask, image, sitk.Transform(), sitk.sitkNearestNeighbor,
                         0, sitk.sitkUInt8)


@pytest.fixture
def study_in_scene(mrml_scene, study):
    scene = mrml_scene.scene
    nodes = add_case_nodes(scene, {s: study.images[s] for s in ACQUIRED}, study.case_id)
    hierarchy = scene.GetSubjectHierarchyNode()
    study_item = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Phantom"), "MR")
    for node in nodes.values():
        item = hierarchy.GetItemByDataNode(node)
        hierarchy.SetItemParent(item, study_item) if item else hierarchy.CreateItem(study_item, node)
    return scene, nodes, study_item


class SwissStandIn:
    """``slicer.cli`` with the Swiss Skull Stripper behind it. ``createNode`` adds a command-line module node to
    the scene (as Slicer's does); ``runSync`` checks the parameters, writes the mask (``make_mask(image) ->
    mask``) into the label-map node and sets the node's status, or raises after the run as ``runSync`` does."""

    def __init__(self, scene, make_mask, status: str = "Completed", raise_text: str = ""):
        self.scene, self.make_mask, self.status, self.raise_text = scene, make_mask, status, raise_text
        self.calls = []

    def createNode(self, module, parameters=None):
        assert module == "swissskullstripper module"
        return self.scene.AddNode(slicer.vtkMRMLCommandLineModuleNode())

    def runSync(self, module, node=None, parameters=None, delete_temporary_files=True, update_display=True):
        assert node is not None and node.GetScene() is self.scene and module == "swissskullstripper module"
        assert update_display is False, "the temporary output must not replace what the slice views show"
        assert tuple(parameters) == SWISS_PARAMETERS
        nodes = {name: self.scene.GetNodeByID(value) for name, value in parameters.items()}
        for name, found in nodes.items():
            assert found is not None and found.GetClassName() == SWISS_CLASSES[name], (name, found)
        self.calls.append(dict(parameters))
        if self.raise_text:
            node.SetStatus(node.CompletedWithErrors)
            raise ValueError(self.raise_text)
        image = image_from_volume_node(nodes["patientVolume"])
        mask = self.make_mask(image)
        update_volume_node_from_image(nodes["patientMaskLabel"], mask)
        update_volume_node_from_image(nodes["patientOutputVolume"], sitk.Mask(image, mask, 0))
        node.SetStatus(getattr(node, self.status))
        if self.status != "Completed":
            node.SetErrorText("Atlas registration did not converge\nsee the log")
        return node


class HDLogicStandIn:
    """``HDBrainExtractionToolLogic``: fills the output segmentation with one ``brain`` segment."""

    make_mask = None
    ready_error = ""
    calls: list = []

    def setupPythonRequirements(self):
        if self.ready_error:
            raise ModuleNotFoundError(self.ready_error)

    def process(self, inputVolume, outputVolume, outputSegmentation, device=None):
        assert outputVolume is None and outputSegmentation.IsA("vtkMRMLSegmentationNode")
        assert device in ("auto", "cpu")
        type(self).calls.append(device)
        scene = inputVolume.GetScene()
        mask = type(self).make_mask(image_from_volume_node(inputVolume))
        label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        update_volume_node_from_image(label, mask)
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label, outputSegmentation)
        scene.RemoveNode(label)


def hd_module(make_mask, ready_error: str = ""):
    logic = type("HDBrainExtractionToolLogic", (HDLogicStandIn,), {"make_mask": staticmethod(make_mask),
                                                                     "ready_error": ready_error, "calls": []})
    return SimpleNamespace(HDBrainExtractionToolLogic=logic)


def node_classes(scene) -> list:
    return sorted(scene.GetNthNode(i).GetClassName() for i in range(scene.GetNumberOfNodes()))


def test_only_the_extensions_slicer_loaded_are_offered():
    assert installed_extension_backends(SimpleNamespace()) == []
    assert installed_extension_backends(None) == []
    both = SimpleNamespace(swissskullstripper=object(), hdbrainextractiontool=object())
    assert installed_extension_backends(both) == ["hd-brain-extraction", "swiss-skull-stripper"]


def test_consent_is_asked_only_where_something_may_be_downloaded():
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    assert needs_consent("hd-brain-extraction", missing) is True, "HD-BET would be fetched from GitHub"
    assert needs_consent("hd-brain-extraction", lambda name: object()) is False
    assert needs_consent("swiss-skull-stripper", missing) is False, "its atlas ships with the extension"


def test_swiss_skull_stripper_mask_is_read_back_checked_named_and_placed_beside_the_volume(study_in_scene, study):
    scene, nodes, study_item = study_in_scene
    reference = nodes[Sequence.T1N]
    run = SwissStandIn(scene, lambda image: true_mask_on(study, image))
    before = node_classes(scene)
    mask_node = extension_brain_mask("swiss-skull-stripper", reference, cli=run,
                                     modules=SimpleNamespace(swissskullstripper="swissskullstripper module"))
    assert len(run.calls) == 1 and run.calls[0]["patientVolume"] == reference.GetID()
    assert mask_node.IsA("vtkMRMLLabelMapVolumeNode")
    assert mask_node.GetName() == f"{reference.GetName()} brain mask (Swiss Skull Stripper)"
    expected = sitk.GetArrayFromImage(true_mask_on(study, image_from_volume_node(reference))) > 0
    np.testing.assert_array_equal(node_array(mask_node) > 0, expected)
    np.testing.assert_allclose(node_matrix(mask_node), node_matrix(reference), atol=1e-6)
    hierarchy = scene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(mask_node)) == study_item
    assert node_classes(scene) == sorted(before + ["vtkMRMLLabelMapVolumeNode"]), \
        "only the mask stays: the masked output volume and the command-line node are removed"


@pytest.mark.parametrize("case, message", [
    (dict(status="CompletedWithErrors"), "Swiss Skull Stripper could not extract the brain of Phantom-00013-t1n: Atlas "
                                         "registration did not converge see the log"),
    (dict(raise_text="T1 failed: exit code 1"), "could not extract the brain of Phantom-00013-t1n: T1 failed: exit code 1"),
    (dict(whole_head=True), r"the Swiss Skull Stripper mask of Phantom-00013-t1n: the brain mask holds \d+ ml; a brain holds"),
    (dict(empty=True), "the brain mask is empty there"),
])
def test_a_failed_or_implausible_swiss_run_is_one_line_and_leaves_nothing(study_in_scene, study, case, message):
    scene, nodes, _ = study_in_scene

    def make_mask(image):
        if case.get("whole_head"):
            return sitk.Cast(sitk.GreaterEqual(image, 0), sitk.sitkUInt8)
        if case.get("empty"):
            return sitk.Cast(image * 0, sitk.sitkUInt8)
        return true_mask_on(study, image)

    run = SwissStandIn(scene, make_mask, status=case.get("status", "Completed"), raise_text=case.get("raise_text", ""))
    before = node_classes(scene)
    with pytest.raises(BrainExtractionError, match=message) as failure:
        extension_brain_mask("swiss-skull-stripper", nodes[Sequence.T1N], cli=run,
                             modules=SimpleNamespace(swissskullstripper="swissskullstripper module"))
    assert "\n" not in str(failure.value)
    assert node_classes(scene) == before, "nothing the failed run made stays in the scene"


def test_hd_brain_extraction_fills_a_segmentation_that_is_the_brain(study_in_scene, study):
    scene, nodes, study_item = study_in_scene
    reference = nodes[Sequence.T1N]
    module = hd_module(lambda image: true_mask_on(study, image))
    mask_node = extension_brain_mask("hd-brain-extraction", reference, modules=SimpleNamespace(
        hdbrainextractiontool=object()), import_module={"HDBrainExtractionTool": module}.__getitem__, device="cpu")
    assert module.HDBrainExtractionToolLogic.calls == ["cpu"]
    assert mask_node.IsA("vtkMRMLSegmentationNode")
    assert mask_node.GetName() == f"{reference.GetName()} brain mask (HD Brain Extraction)"
    from MRISynthesisLib.scene.brain_mask_nodes import brain_mask_from_node

    made = brain_mask_from_node(mask_node)
    truth = true_mask_on(study, image_from_volume_node(reference))
    on_grid = sitk.Resample(made, truth, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(on_grid) > 0, sitk.GetArrayFromImage(truth) > 0)
    hierarchy = scene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(mask_node)) == study_item


def test_hd_brain_extraction_not_installed_not_ready_or_failing_says_what_to_do(study_in_scene, study):
    scene, nodes, _ = study_in_scene
    reference = nodes[Sequence.T1N]
    before = node_classes(scene)
    with pytest.raises(BrainExtractionError, match="HD Brain Extraction is not installed: install the "
                                                   "HDBrainExtraction extension .* or select a brain mask"):
        extension_brain_mask("hd-brain-extraction", reference, modules=SimpleNamespace())
    not_ready = hd_module(lambda image: true_mask_on(study, image), ready_error="No module named 'HD_BET'")
    with pytest.raises(BrainExtractionError, match="HD Brain Extraction is not ready: No module named 'HD_BET'"):
        extension_brain_mask("hd-brain-extraction", reference, modules=SimpleNamespace(hdbrainextractiontool=1),
                             import_module={"HDBrainExtractionTool": not_ready}.__getitem__)

    def offline(image):
        raise ConnectionError("HTTPSConnectionPool(host='zenodo.org'): Max retries exceeded")

    with pytest.raises(BrainExtractionError, match="zenodo.org.*offline, HD-BET cannot fetch its weights; select a "
                                                   "brain mask instead"):
        extension_brain_mask("hd-brain-extraction", reference, modules=SimpleNamespace(hdbrainextractiontool=1),
                             import_module={"HDBrainExtractionTool": hd_module(offline)}.__getitem__)
    with pytest.raises(BrainExtractionError, match="expected one of hd-brain-extraction, swiss-skull-stripper"):
        extension_brain_mask("fsl-bet", reference, modules=SimpleNamespace())
    assert node_classes(scene) == before


def test_the_extension_mask_prepares_the_study_in_the_worker(study_in_scene, study):
    """End to end: the Swiss Skull Stripper's label map is the brain extraction of *Prepare inputs*."""
    scene, nodes, _ = study_in_scene
    mask_node = extension_brain_mask("swiss-skull-stripper", nodes[Sequence.T1N],
                                     cli=SwissStandIn(scene, lambda image: true_mask_on(study, image)),
                                     modules=SimpleNamespace(swissskullstripper="swissskullstripper module"))
    made = synthesize_in_scene(scene, nodes, "demo", device="cpu", backend="process", prepare=True,
                               brain_mask=mask_node)
    shown, given = node_array(made.brain_mask) > 0, node_array(mask_node) > 0
    dice = 2 * np.count_nonzero(shown & given) / (np.count_nonzero(shown) + np.count_nonzero(given))
    assert dice > 0.95, f"the study was prepared with the extension's mask: Dice {dice:.3f}"
    assert node_array(made.targets[Sequence.T1C].synthetic)[shown].any()
