"""A synthesis result as new nodes (:func:`add_result_nodes`): their names, descriptions, provenance attributes
and references to the inputs, in a subject-hierarchy folder beside the inputs.

Inputs may have left the scene while the job ran: results then reference only the inputs
still there, and say so (:class:`InputPresence`).
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Iterable, Mapping

import vtk

from .. import __version__
from ..sequences import SEQUENCES, Sequence
from .display import set_result_display
from .geometry import volume_node_from_image
from .inputs import SelectedInputs
from .nodes import ATTRIBUTE_PREFIX, check_scene, node_in_scene, node_label, one_line

__all__ = [
    "ROLE_SYNTHETIC",
    "ROLE_STAGE1",
    "ROLE_REFINEMENT",
    "ROLE_TUMOUR",
    "ROLE_ERROR",
    "ROLE_UNCERTAINTY",
    "ROLE_NAME_SUFFIX",
    "NO_RESULT_MESSAGE",
    "TargetNodes",
    "ResultNodes",
    "InputPresence",
    "input_presence",
    "result_node_name",
    "result_description",
    "create_result_folder",
    "place_in_folder",
    "check_result",
    "check_selected_inputs",
    "check_folder_item",
    "add_result_nodes",
]

#: Roles of output nodes (value of the ``MRISynthesis.Role`` attribute).
ROLE_SYNTHETIC = "synthetic"
ROLE_STAGE1 = "stage1"
ROLE_REFINEMENT = "refinement map"
ROLE_TUMOUR = "tumour map"
ROLE_ERROR = "error map"
ROLE_UNCERTAINTY = "uncertainty map"

#: Node-name suffix per role, after the target's short name ("... T1c (synthetic)").
ROLE_NAME_SUFFIX: dict[str, str] = {
    ROLE_SYNTHETIC: "(synthetic)",
    ROLE_STAGE1: "(synthetic, stage 1)",
    ROLE_REFINEMENT: "refinement map",
    ROLE_TUMOUR: "tumour map",
    ROLE_ERROR: "error map",
    ROLE_UNCERTAINTY: "uncertainty map",
}

#: Message when a caller passes no result (``Job.take_result()`` is None for a cancelled or failed job).
NO_RESULT_MESSAGE = "no result to add (the job was cancelled or failed)"


@dataclasses.dataclass
class TargetNodes:
    """The nodes made for one target sequence."""

    sequence: Sequence
    synthetic: Any
    stage1: Any = None
    refinement_map: Any = None
    tumour_map: Any = None
    error_map: Any = None
    uncertainty_map: Any = None

    def maps(self) -> list:
        """Map nodes present, in the order they are preferred as overlay (error, uncertainty, refinement,
        tumour)."""
        return [n for n in (self.error_map, self.uncertainty_map, self.refinement_map, self.tumour_map)
                if n is not None]

    def all_nodes(self) -> list:
        return [n for n in (self.synthetic, self.stage1, self.refinement_map, self.tumour_map, self.error_map,
                            self.uncertainty_map) if n is not None]


@dataclasses.dataclass
class ResultNodes:
    """Everything one run added to the scene."""

    folder_item: int
    targets: dict  # Sequence -> TargetNodes
    table: Any = None
    messages: list = dataclasses.field(default_factory=list)  # one line each, for the user's log
    #: The brain mask a prepared study used (a label map on the reference grid), to check it.
    brain_mask: Any = None

    def all_nodes(self) -> list:
        nodes = [n for target in self.targets.values() for n in target.all_nodes()]
        return nodes + [n for n in (self.table, self.brain_mask) if n is not None]


@dataclasses.dataclass
class InputPresence:
    """Which input nodes of a run are still in the scene when its results are added."""

    present: dict  # Sequence -> node still in the scene
    removed: dict  # Sequence -> node removed while the job ran (its name is still readable)

    def anchor(self, reference: Sequence) -> Any:
        """The node the result folder goes beside: the reference input, else another one still there."""
        if reference in self.present:
            return self.present[reference]
        return next((self.present[s] for s in SEQUENCES if s in self.present), None)

    def messages(self) -> list[str]:
        """One line per input that left the scene while the job ran."""
        return [f"{node_label(node)} ({sequence.display_name} input) was removed from the scene during the run; "
                "the results keep its name but no reference to it" for sequence, node in self.removed.items()]


def input_presence(scene: Any, nodes: Mapping[Sequence, Any]) -> InputPresence:
    """Split a run's input nodes into those still in ``scene`` and those removed since it started."""
    present = {s: n for s, n in nodes.items() if node_in_scene(scene, n)}
    removed = {s: n for s, n in nodes.items() if s not in present}
    return InputPresence(present=present, removed=removed)


def result_node_name(base: str, sequence: Sequence, role: str) -> str:
    """``"<base> T1c (synthetic)"``, ``"<base> T1c refinement map"``, ... on one line."""
    return one_line(f"{base} {sequence.short_name} {ROLE_NAME_SUFFIX[role]}")


def _describe_inputs(inputs: Iterable[Sequence], nodes: Mapping[Sequence, Any],
                     removed: Iterable[Sequence] = ()) -> str:
    """The inputs as the description names them: "T1 (name), T2 (name, removed from the scene), ..."."""
    removed = set(removed)
    parts = []
    for sequence in inputs:
        node = nodes.get(sequence)
        if node is None:
            parts.append(sequence.display_name)
        elif sequence in removed:
            parts.append(f"{sequence.display_name} ({node_label(node)}, removed from the scene)")
        else:
            parts.append(f"{sequence.display_name} ({node_label(node)})")
    return ", ".join(parts)


def result_description(role: str, sequence: Sequence, model: str, inputs_text: str) -> str:
    """Node description: says SYNTHETIC, what the node is, the model and the inputs."""
    made = f"Made by MRISynthesis {__version__} with model '{model}' from {inputs_text}."
    what = {
        ROLE_SYNTHETIC: f"SYNTHETIC {sequence.display_name} volume - not an acquired image; "
                        "check it against the acquired images before relying on it.",
        ROLE_STAGE1: f"SYNTHETIC {sequence.display_name} volume, stage 1 only (2D HF-GAN, before the 3D Refiner).",
        ROLE_REFINEMENT: f"Refinement map of the SYNTHETIC {sequence.display_name} volume: "
                         "final minus stage 1 (signed), what the 3D Refiner changed.",
        ROLE_TUMOUR: f"Tumour-region map of the SYNTHETIC {sequence.display_name} volume: "
                     "|refinement| inside the tumour region.",
        ROLE_ERROR: f"Error map of the SYNTHETIC {sequence.display_name} volume: "
                    "|synthetic - acquired| (validation).",
        ROLE_UNCERTAINTY: f"Uncertainty map of the SYNTHETIC {sequence.display_name} volume: per-voxel standard "
                          "deviation over test-time variations (flips, bottleneck dropout, intensity codes, "
                          "shifted refiner windows), in the volume's units.",
    }[role]
    return f"{what} {made}"


def _tag_node(node: Any, role: str, sequence: Sequence, result: Any, inputs: Mapping[Sequence, Any],
              inputs_text: str) -> None:
    """Provenance: attributes, description and references to the input nodes still in the scene (``inputs``)."""
    node.SetAttribute(f"{ATTRIBUTE_PREFIX}.Role", role)
    node.SetAttribute(f"{ATTRIBUTE_PREFIX}.Sequence", sequence.value)
    node.SetAttribute(f"{ATTRIBUTE_PREFIX}.Model", str(result.model_name))
    node.SetAttribute(f"{ATTRIBUTE_PREFIX}.Inputs", ",".join(Sequence(s).value for s in result.inputs))
    node.SetAttribute(f"{ATTRIBUTE_PREFIX}.Device", str(result.device))
    node.SetAttribute(f"{ATTRIBUTE_PREFIX}.Version", __version__)
    node.SetDescription(result_description(role, sequence, str(result.model_name), inputs_text))
    for source in result.inputs:
        input_node = inputs.get(Sequence(source))
        if input_node is not None:
            node.AddNodeReferenceID(f"{ATTRIBUTE_PREFIX}.Input", input_node.GetID())


def place_in_folder(scene: Any, node: Any, folder_item: int) -> None:
    """Put ``node`` into the subject-hierarchy folder ``folder_item`` (creating its item when headless)."""
    hierarchy = scene.GetSubjectHierarchyNode()
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, folder_item)
    else:  # headless: no subject-hierarchy plugin creates items for new nodes
        hierarchy.CreateItem(folder_item, node)


def create_result_folder(scene: Any, beside: Any, name: str) -> int:
    """A subject-hierarchy folder under the same parent as the node ``beside``.

    At the scene level when there is no such node or it is no longer in the scene (its
    subject-hierarchy item may be gone, or stale when no plugin cleaned it up).
    """
    hierarchy = scene.GetSubjectHierarchyNode()
    parent = hierarchy.GetSceneItemID()
    item = hierarchy.GetItemByDataNode(beside) if node_in_scene(scene, beside) else 0
    if item:
        parent = hierarchy.GetItemParent(item) or parent
    return hierarchy.CreateFolderItem(parent, name)


def check_result(result: Any) -> None:
    """Refuse what is not one synthesis result: None (no result), a list (validation results), other objects."""
    if result is None:
        raise ValueError(NO_RESULT_MESSAGE)
    if isinstance(result, (list, tuple)):
        raise TypeError(f"expected one SynthesisResult, got {type(result).__name__}; "
                        "a validation's results (one per sequence) go to add_validation_nodes")
    if not isinstance(getattr(result, "targets", None), Mapping):
        raise TypeError(f"expected a SynthesisResult, got {type(result).__name__}")


def check_selected_inputs(selected_inputs: Any) -> None:
    """Refuse ``selected_inputs`` that is not the :class:`~MRISynthesisLib.scene.inputs.SelectedInputs` of a job."""
    if not isinstance(selected_inputs, SelectedInputs):
        raise TypeError("selected_inputs must be the SelectedInputs that copy_selected_inputs returned for this "
                        f"job, got {type(selected_inputs).__name__}")


def check_folder_item(scene: Any, folder_item: Any) -> int:
    """``folder_item`` as an int when it is an item of ``scene``'s subject hierarchy (the scene item or below).

    Refuses a stale or foreign ID (ValueError) and what is no item ID at all (TypeError),
    without touching the hierarchy's per-item calls, which log VTK errors for unknown IDs.
    """
    if isinstance(folder_item, bool) or not isinstance(folder_item, numbers.Integral):
        raise TypeError(f"folder_item must be a subject-hierarchy item ID (int), got {type(folder_item).__name__}")
    item = int(folder_item)
    hierarchy = scene.GetSubjectHierarchyNode()
    scene_item = hierarchy.GetSceneItemID()
    items = vtk.vtkIdList()
    hierarchy.GetItemChildren(scene_item, items, True)
    if item != scene_item and items.IsId(item) < 0:
        raise ValueError(f"folder_item {item} is not a subject-hierarchy item of this scene")
    return item


def add_result_nodes(scene: Any, result: Any, selected_inputs: SelectedInputs, keep_stage1: bool = False,
                     folder_name: str | None = None, folder_item: int | None = None) -> ResultNodes:
    """Turn a :class:`~MRISynthesisLib.core.pipeline.SynthesisResult` into nodes in a folder beside the inputs.

    Per target: the synthetic volume, optionally the stage-1 volume, and whichever maps the
    result holds (refinement, tumour, error). Each node gets a name, a description and
    attributes that say it is synthetic, the model and the inputs. Nodes go into ``folder_item``
    when given, else into a new folder. Nothing is shown in the views yet
    (see :func:`~MRISynthesisLib.scene.display.show_result`).

    Inputs may have left the scene while the job ran: nodes then reference only the inputs
    still there, the description keeps a removed input's name with a note, the folder goes
    beside a remaining input (or at the scene level) and ``messages`` says so, one line each.
    Names come from ``selected_inputs.base_name``, fixed when the job started.

    Raises ValueError when ``result`` is None (what ``Job.take_result()`` gives for a cancelled
    or failed job) or ``folder_item`` is not an item of this scene's subject hierarchy, and
    TypeError for arguments of the wrong kind; nothing is added then.
    """
    check_scene(scene)
    check_result(result)
    check_selected_inputs(selected_inputs)
    if folder_name is not None and not isinstance(folder_name, str):
        raise TypeError(f"folder_name must be a string, got {type(folder_name).__name__}")
    if folder_item is not None:
        folder_item = check_folder_item(scene, folder_item)
    base = selected_inputs.base_name
    presence = input_presence(scene, selected_inputs.nodes)
    targets_text = " + ".join(Sequence(s).short_name for s in result.targets)
    if folder_item is None:
        name = one_line(folder_name) or one_line(f"{base} synthetic {targets_text}")
        folder = create_result_folder(scene, presence.anchor(selected_inputs.reference), name)
    else:
        folder = folder_item
    inputs_text = _describe_inputs([Sequence(s) for s in result.inputs], selected_inputs.nodes, presence.removed)
    made: dict = {}
    for key, target in result.targets.items():
        sequence = Sequence(key)
        images = {ROLE_SYNTHETIC: target.synthetic, ROLE_STAGE1: target.stage1 if keep_stage1 else None,
                  ROLE_REFINEMENT: target.refinement_map, ROLE_TUMOUR: target.tumour_map,
                  ROLE_ERROR: target.error_map, ROLE_UNCERTAINTY: getattr(target, "uncertainty_map", None)}
        nodes: dict[str, Any] = {}
        for role, image in images.items():
            if image is None:
                continue
            node = volume_node_from_image(scene, image, result_node_name(base, sequence, role))
            _tag_node(node, role, sequence, result, presence.present, inputs_text)
            place_in_folder(scene, node, folder)
            nodes[role] = node
        for role, node in nodes.items():
            if role != ROLE_SYNTHETIC:
                node.SetNodeReferenceID(f"{ATTRIBUTE_PREFIX}.Synthetic", nodes[ROLE_SYNTHETIC].GetID())
        made[sequence] = TargetNodes(
            sequence=sequence, synthetic=nodes[ROLE_SYNTHETIC], stage1=nodes.get(ROLE_STAGE1),
            refinement_map=nodes.get(ROLE_REFINEMENT), tumour_map=nodes.get(ROLE_TUMOUR),
            error_map=nodes.get(ROLE_ERROR), uncertainty_map=nodes.get(ROLE_UNCERTAINTY))
        set_result_display(scene, made[sequence], target)
    mask_node = None
    if getattr(result, "brain_mask", None) is not None:
        mask_node = volume_node_from_image(scene, result.brain_mask, one_line(f"{base} brain mask (prepared)"),
                                           class_name="vtkMRMLLabelMapVolumeNode")
        mask_node.SetAttribute(f"{ATTRIBUTE_PREFIX}.Role", "brain mask")
        place_in_folder(scene, mask_node, folder)
    return ResultNodes(folder_item=folder, targets=made, messages=presence.messages(), brain_mask=mask_node)
