"""The uncertainty map in a real MRML scene (slicer-core): its volume node, provenance, its own colour table
and its place as the overlay over the synthetic volume."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from scene_support import (  # noqa: F401 (mrml_scene is a fixture)
    assert_same_image,
    load_case,
    make_result,
    mrml_scene,
    write_case_files,
)

from MRISynthesisLib.scene.display import (  # noqa: E402  (after the skip in scene_support)
    MAGNITUDE_COLOR_NAME,
    UNCERTAINTY_COLOR_NAME,
    show_result,
    slice_composite_nodes,
    uncertainty_color_node,
    uncertainty_colours,
)
from MRISynthesisLib.scene.geometry import image_from_volume_node  # noqa: E402
from MRISynthesisLib.scene.inputs import copy_selected_inputs  # noqa: E402
from MRISynthesisLib.scene.results import ROLE_UNCERTAINTY, add_result_nodes  # noqa: E402
from MRISynthesisLib.sequences import Sequence  # noqa: E402


def _with_uncertainty(result, seed: int = 3):
    """The result with a real uncertainty map (non-negative, 0 outside the brain) on the synthetic's grid."""
    target = result.targets[Sequence.T1C]
    synthetic = sitk.GetArrayFromImage(target.synthetic)
    spread = np.abs(np.random.default_rng(seed).normal(0.0, 15.0, synthetic.shape)).astype(np.float32)
    spread[synthetic == 0] = 0.0
    image = sitk.GetImageFromArray(spread)
    image.CopyInformation(target.synthetic)
    targets = {Sequence.T1C: dataclasses.replace(target, uncertainty_map=image,
                                                  uncertainty={"samples": 4, "mean_brain": float(spread.mean())})}
    return dataclasses.replace(result, targets=targets)


@pytest.fixture
def added(mrml_scene, tmp_path, make_volume):
    case = load_case(mrml_scene, write_case_files(tmp_path, make_volume))
    selected = copy_selected_inputs(case.nodes)
    result = _with_uncertainty(make_result(selected.images[Sequence.T1N]))
    return case.scene, result, add_result_nodes(case.scene, result, selected)


def test_uncertainty_node_has_the_map_a_name_and_provenance(added):
    scene, result, made = added
    node = made.targets[Sequence.T1C].uncertainty_map
    assert node is not None and node in made.all_nodes()
    assert node.GetName() == "BraTS-GLI-00001-000 T1c uncertainty map"
    assert node.GetAttribute("MRISynthesis.Role") == ROLE_UNCERTAINTY
    assert "Uncertainty map of the SYNTHETIC" in node.GetDescription()
    synthetic = made.targets[Sequence.T1C].synthetic
    assert node.GetNodeReferenceID("MRISynthesis.Synthetic") == synthetic.GetID()
    assert_same_image(image_from_volume_node(node), result.targets[Sequence.T1C].uncertainty_map)


def test_uncertainty_node_has_its_own_colour_table(added):
    scene, result, made = added
    display = made.targets[Sequence.T1C].uncertainty_map.GetDisplayNode()
    colour = scene.GetNodeByID(display.GetColorNodeID())
    assert colour.GetName() == UNCERTAINTY_COLOR_NAME != MAGNITUDE_COLOR_NAME
    assert colour.GetAttribute("MRISynthesis.ColorTable") == UNCERTAINTY_COLOR_NAME
    rows = uncertainty_colours()
    assert colour.GetNumberOfColors() == len(rows)
    rgba = [0.0] * 4
    colour.GetColor(len(rows) - 1, rgba)
    assert rgba == pytest.approx(list(rows[-1]), abs=1.0 / 255)  # stored as 8-bit colours
    colour.GetColor(0, rgba)
    assert rgba[3] == 0.0  # the lowest values are transparent: the synthetic volume shows through
    assert display.GetWindowLevelMin() == 0.0 and display.GetWindowLevelMax() > 0.0
    tumour_display = made.targets[Sequence.T1C].tumour_map.GetDisplayNode()
    assert tumour_display.GetColorNodeID() != display.GetColorNodeID()
    # later maps reuse the scene's table instead of adding another
    count = scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")
    assert uncertainty_color_node(scene).GetID() == colour.GetID()
    assert count == scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")


def test_uncertainty_map_is_the_overlay_over_the_synthetic(added):
    scene, result, made = added
    shown = show_result(scene, made)
    composites = slice_composite_nodes(scene)
    assert composites
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == shown.synthetic.GetID()
        assert composite.GetForegroundVolumeID() == shown.uncertainty_map.GetID()
        assert composite.GetForegroundOpacity() > 0


def test_no_map_no_node(mrml_scene, tmp_path, make_volume):
    case = load_case(mrml_scene, write_case_files(tmp_path, make_volume))
    selected = copy_selected_inputs(case.nodes)
    made = add_result_nodes(case.scene, make_result(selected.images[Sequence.T1N]), selected)
    assert made.targets[Sequence.T1C].uncertainty_map is None
    assert case.scene.GetFirstNodeByName(UNCERTAINTY_COLOR_NAME) is None
