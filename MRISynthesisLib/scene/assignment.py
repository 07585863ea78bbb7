"""Filling the four input slots from node names: the scene's candidate volumes, the sequence each name
suggests (:func:`MRISynthesisLib.sequences.guess_sequence`) and why a slot stayed empty (as data,
:class:`AssignmentNote`; the widget words it)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Optional

from ..sequences import SEQUENCES, Sequence, guess_sequence
from .nodes import is_output_node, node_label

__all__ = [
    "candidate_input_nodes",
    "Assignment",
    "AssignmentNote",
    "assign_sequences",
    "fill_empty_slots",
    "assignment_notes",
]


def candidate_input_nodes(scene: Any) -> list:
    """Scalar volumes that may be inputs: not label maps and not outputs of this tool."""
    nodes = []
    collection = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    for index in range(collection.GetNumberOfItems()):
        node = collection.GetItemAsObject(index)
        if node.IsA("vtkMRMLLabelMapVolumeNode") or is_output_node(node):
            continue
        nodes.append(node)
    return nodes


@dataclasses.dataclass(frozen=True)
class AssignmentNote:
    """A slot left empty because several volumes look like its sequence: the user must choose one."""

    sequence: Sequence
    candidates: tuple  # labels of the nodes that look like ``sequence``, in scene order


@dataclasses.dataclass
class Assignment:
    """Input slots filled from node names; a slot stays empty when its choice is not clear."""

    nodes: dict  # Sequence -> node or None
    ambiguous: dict  # Sequence -> names of the several nodes that look like it
    unrecognised: list  # names that name no sequence, or several

    def notes(self) -> list[AssignmentNote]:
        """One note per slot left empty for a reason the user should know (canonical sequence order)."""
        return [AssignmentNote(sequence, tuple(self.ambiguous[sequence]))
                for sequence in SEQUENCES if sequence in self.ambiguous]


#: Tells a node's sequence from more than its name (its DICOM tags, :mod:`.dicom_nodes`), or None.
Recogniser = Optional[Callable[[Any], Optional[Sequence]]]


def assign_sequences(nodes: Iterable[Any], recognise: Recogniser = None) -> Assignment:
    """Map volume nodes to the four sequences: by ``recognise`` (DICOM tags) where it knows, else by name
    (:func:`guess_sequence` aliases).

    A sequence claimed by exactly one node gets it; a sequence claimed by several, and names
    that are ambiguous themselves ("t1_t2_fusion"), are left empty for the user to choose.
    """
    claims: dict[Sequence, list] = {sequence: [] for sequence in SEQUENCES}
    unrecognised = []
    for node in nodes:
        sequence = (recognise(node) if recognise is not None else None) or guess_sequence(node.GetName() or "")
        if sequence is None:
            unrecognised.append(node_label(node))
        else:
            claims[sequence].append(node)
    chosen = {sequence: (found[0] if len(found) == 1 else None) for sequence, found in claims.items()}
    ambiguous = {sequence: [node_label(node) for node in found]
                 for sequence, found in claims.items() if len(found) > 1}
    return Assignment(nodes=chosen, ambiguous=ambiguous, unrecognised=unrecognised)


def fill_empty_slots(current: Mapping[Sequence, Any], scene: Any, recognise: Recogniser = None) -> dict:
    """The current selection with empty slots filled by :func:`assign_sequences` (choices kept).

    A node the user already put in one slot is not proposed for another.
    """
    used = {node.GetID() for node in current.values() if node is not None}
    free = [node for node in candidate_input_nodes(scene) if node.GetID() not in used]
    proposal = assign_sequences(free, recognise).nodes
    return {sequence: current.get(sequence) or proposal.get(sequence) for sequence in SEQUENCES}


def assignment_notes(selected: Mapping[Sequence, Any], scene: Any, recognise: Recogniser = None
                     ) -> list[AssignmentNote]:
    """Why empty slots stayed empty: one note per empty slot whose sequence several scene volumes look like."""
    ambiguous = assign_sequences(candidate_input_nodes(scene), recognise).ambiguous
    empty = {s: names for s, names in ambiguous.items() if selected.get(s) is None}
    return Assignment(nodes={}, ambiguous=empty, unrecognised=[]).notes()
