"""Choosing inputs and copying them for the engine, headless on the real MRML library: name-based assignment
and its notes (``scene.assignment``) and ``scene.inputs.copy_selected_inputs``. The panel's state is in
``test_scene_panel.py``."""
from __future__ import annotations

import pytest
import SimpleITK as sitk

from scene_support import (  # noqa: F401 (mrml_scene is a fixture)
    OBLIQUE_GEOMETRY, assert_same_image, load_volume, mrml_scene, snapshot)

from MRISynthesisLib.scene.assignment import (  # noqa: E402
    AssignmentNote,
    assign_sequences,
    assignment_notes,
    candidate_input_nodes,
    fill_empty_slots,
)
from MRISynthesisLib.scene.geometry import volume_node_from_image  # noqa: E402
from MRISynthesisLib.scene.inputs import case_base_name, copy_selected_inputs  # noqa: E402
from MRISynthesisLib.scene.nodes import MRMLInputError  # noqa: E402
from MRISynthesisLib.scene.results import ROLE_SYNTHETIC  # noqa: E402
from MRISynthesisLib.sequences import SEQUENCES, Sequence  # noqa: E402


# --------------------------------------------------------------------------- choosing inputs


def add_named_volumes(scene, names, make_volume):
    return {name: volume_node_from_image(scene, make_volume(seed=i), name) for i, name in enumerate(names)}


def test_auto_assignment_picks_typical_names(mrml_scene, make_volume):
    nodes = add_named_volumes(mrml_scene.scene, [
        "BraTS-GLI-00001-000-t1n", "T1 post Gd", "Ax T2 FSE", "AX T2 FLAIR", "localizer"], make_volume)

    assignment = assign_sequences(candidate_input_nodes(mrml_scene.scene))

    assert assignment.nodes == {
        Sequence.T1N: nodes["BraTS-GLI-00001-000-t1n"], Sequence.T1C: nodes["T1 post Gd"],
        Sequence.T2W: nodes["Ax T2 FSE"], Sequence.T2F: nodes["AX T2 FLAIR"]}
    assert assignment.unrecognised == ["localizer"]
    assert assignment.notes() == []


def test_auto_assignment_leaves_ambiguous_slots_empty(mrml_scene, make_volume):
    nodes = add_named_volumes(mrml_scene.scene, ["t1_t2_fusion", "T2 a", "T2 b", "flair"], make_volume)

    assignment = assign_sequences(candidate_input_nodes(mrml_scene.scene))

    assert assignment.nodes[Sequence.T1N] is None and assignment.nodes[Sequence.T1C] is None
    assert assignment.nodes[Sequence.T2W] is None  # two candidates: the user must choose
    assert assignment.nodes[Sequence.T2F] is nodes["flair"]
    assert assignment.ambiguous == {Sequence.T2W: ["T2 a", "T2 b"]}
    assert "t1_t2_fusion" in assignment.unrecognised
    assert assignment.notes() == [AssignmentNote(Sequence.T2W, ("T2 a", "T2 b"))]


def test_label_maps_and_outputs_are_not_candidates(mrml_scene, make_volume):
    scene = mrml_scene.scene
    t1 = volume_node_from_image(scene, make_volume(), "case-t1n")
    volume_node_from_image(scene, make_volume(), "case-t1c-seg", class_name="vtkMRMLLabelMapVolumeNode")
    output = volume_node_from_image(scene, make_volume(), "case T1c (synthetic)")
    output.SetAttribute("MRISynthesis.Role", ROLE_SYNTHETIC)

    assert candidate_input_nodes(scene) == [t1]


def test_fill_empty_slots_keeps_the_users_choice(mrml_scene, make_volume):
    nodes = add_named_volumes(mrml_scene.scene, ["case-t1n", "case-t2w", "other scan"], make_volume)
    current = {Sequence.T1N: None, Sequence.T1C: None, Sequence.T2W: nodes["other scan"], Sequence.T2F: None}

    filled = fill_empty_slots(current, mrml_scene.scene)

    assert filled[Sequence.T1N] is nodes["case-t1n"]
    assert filled[Sequence.T2W] is nodes["other scan"]  # not replaced by the better-named case-t2w
    assert filled[Sequence.T1C] is None and filled[Sequence.T2F] is None


def test_assignment_notes_explain_empty_slots(mrml_scene, make_volume):
    nodes = add_named_volumes(mrml_scene.scene, ["T2 a", "T2 b", "flair"], make_volume)
    selected = {Sequence.T1N: None, Sequence.T1C: None, Sequence.T2W: None, Sequence.T2F: nodes["flair"]}

    assert assignment_notes(selected, mrml_scene.scene) == [AssignmentNote(Sequence.T2W, ("T2 a", "T2 b"))]
    selected[Sequence.T2W] = nodes["T2 b"]  # the user chose: no note any more
    assert assignment_notes(selected, mrml_scene.scene) == []


def test_assignment_notes_name_every_candidate_of_each_empty_slot(mrml_scene, make_volume):
    nodes = add_named_volumes(mrml_scene.scene, ["flair 1", "flair 2", "T1 a", "T1 b", "T1 old", "t1_t2"], make_volume)

    notes = assignment_notes(dict.fromkeys(SEQUENCES), mrml_scene.scene)

    assert notes == [AssignmentNote(Sequence.T1N, ("T1 a", "T1 b", "T1 old")),
                     AssignmentNote(Sequence.T2F, ("flair 1", "flair 2"))]  # sequence order, not scene order
    chosen = dict.fromkeys(SEQUENCES)
    chosen[Sequence.T2F] = nodes["flair 2"]
    assert assignment_notes(chosen, mrml_scene.scene) == [AssignmentNote(Sequence.T1N, ("T1 a", "T1 b", "T1 old"))]


# --------------------------------------------------------------------------- inputs for the engine


def test_copy_selected_inputs_copies_and_resamples_onto_the_first_input(mrml_scene, tmp_path, make_volume,
                                                                        rotation):
    t1_image = make_volume(direction=rotation(20, "x"), **OBLIQUE_GEOMETRY)
    t2_image = make_volume(seed=3, spacing=(1.0, 1.0, 1.0), origin=OBLIQUE_GEOMETRY["origin"])
    for name, image in (("case-t1n.nrrd", t1_image), ("case-t2w.nii.gz", t2_image)):
        sitk.WriteImage(image, str(tmp_path / name))
    t1 = load_volume(mrml_scene, tmp_path / "case-t1n.nrrd", "case-t1n")
    t2 = load_volume(mrml_scene, tmp_path / "case-t2w.nii.gz", "case-t2w")
    before = [snapshot(t1), snapshot(t2)]

    selected_inputs = copy_selected_inputs(
        {Sequence.T1N: t1, Sequence.T1C: None, Sequence.T2W: t2, Sequence.T2F: None})

    assert selected_inputs.reference is Sequence.T1N
    assert set(selected_inputs.images) == {Sequence.T1N, Sequence.T2W}
    assert_same_image(selected_inputs.images[Sequence.T1N], t1_image)
    resampled = sitk.Resample(t2_image, t1_image, sitk.Transform(), sitk.sitkLinear, 0.0, t2_image.GetPixelID())
    assert_same_image(selected_inputs.images[Sequence.T2W], resampled)
    assert any(line.startswith("T2 resampled onto the T1 grid") for line in selected_inputs.messages)
    assert "case-t2w used as T2" in selected_inputs.messages
    assert selected_inputs.base_name == "case"
    assert [snapshot(t1), snapshot(t2)] == before


def test_copy_selected_inputs_refuses_one_node_in_two_slots(mrml_scene, make_volume):
    node = volume_node_from_image(mrml_scene.scene, make_volume(), "scan")
    with pytest.raises(MRMLInputError, match="^scan: selected as both T1 and T2$"):
        copy_selected_inputs({Sequence.T1N: node, Sequence.T2W: node})
    with pytest.raises(MRMLInputError, match="no input volume selected"):
        copy_selected_inputs(dict.fromkeys(SEQUENCES))


@pytest.mark.parametrize("names, expected", [
    (["BraTS-GLI-00001-000-t1n", "BraTS-GLI-00001-000-t2w"], "BraTS-GLI-00001-000"),
    (["BraTS2021_00000_t1", "BraTS2021_00000_t1ce", "BraTS2021_00000_flair"], "BraTS2021_00000"),
    (["Ax T2 FLAIR", "Ax T1"], "fallback"),  # "Ax" is too short to name a case
    (["MRHead"], "fallback"),
])
def test_case_base_name(names, expected):
    assert case_base_name(names, "fallback") == expected
