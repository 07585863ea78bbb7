"""The selected input nodes copied into images for the engine (:func:`copy_selected_inputs`, main thread):
every node checked, its voxels copied and put on one grid, and the case name results will carry.

The images share nothing with the nodes, so a worker thread may use them while the user
keeps working in the scene. Input nodes are only read, never modified.
"""
from __future__ import annotations

import dataclasses
import os
import re
import reprlib
from typing import Any, Mapping, Sequence as SequenceType

import SimpleITK as sitk

import slicer

from ..sequences import SEQUENCES, Sequence, UnknownSequenceError, parse_sequence
from .geometry import image_from_volume_node
from .node_checks import check_input_node
from .nodes import MRMLInputError, node_label, one_line

__all__ = [
    "SelectedInputs",
    "copy_selected_inputs",
    "selected_nodes",
    "image_from_input_node",
    "input_base_name",
    "case_base_name",
]

#: Shortest common prefix of the input names that is taken as the case name.
_MIN_CASE_NAME_CHARS = 3


@dataclasses.dataclass
class SelectedInputs:
    """Copies of the selected volumes on one grid, the nodes they came from and what was done."""

    images: dict  # Sequence -> sitk.Image (on the reference grid)
    nodes: dict  # Sequence -> node
    reference: Sequence
    messages: list
    #: One-line name that output nodes and folders start with, fixed when the job starts
    #: (:func:`input_base_name`): renaming an input during the run does not change it.
    base_name: str = ""
    #: The copies on their own grids (before alignment): what the preconditions are measured on and a
    #: clinical study is prepared from (resampling first would hide thick slices and cut fields of view).
    native: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.base_name and self.reference in self.nodes:
            self.base_name = input_base_name(self.nodes, self.reference)


def image_from_input_node(node: Any) -> sitk.Image:
    """The node's voxels as an image, refused (naming the node) when empty, constant or not finite.

    Uses the engine's own :func:`~MRISynthesisLib.core.io.check_image` with the node's name, so a bad
    volume is reported here, by name, rather than later by sequence from the worker thread.
    """
    from ..core.io import InputError, check_image  # imported here: io needs packages installed on first use

    image = image_from_volume_node(node)
    try:
        check_image(image, node_label(node))
    except InputError as error:
        raise MRMLInputError(str(error)) from error
    return image


def copy_selected_inputs(selected: Mapping[Sequence, Any], scene: Any = None) -> SelectedInputs:
    """Copy the selected nodes into images and put them on the first selected input's grid.

    Runs on the main thread (it reads MRML); the images it returns share nothing with the
    nodes, so a worker thread may use them while the user keeps working in the scene.
    Every node is checked first (:func:`~MRISynthesisLib.scene.node_checks.check_input_node`,
    in ``scene`` when given, else in its own scene) and its voxels after
    (:func:`image_from_input_node`); the first problem is raised as :class:`MRMLInputError`
    naming the node.
    """
    nodes = selected_nodes(selected)
    if not nodes:
        raise MRMLInputError("no input volume selected")
    for node in nodes.values():
        check_input_node(node, scene)
    _check_no_node_twice(nodes)
    from ..core.io import align_inputs  # imported here: io needs packages installed on first use

    images = {sequence: image_from_input_node(node) for sequence, node in nodes.items()}
    aligned = align_inputs(images)
    messages = [f"{node_label(node)} used as {sequence.display_name}" for sequence, node in nodes.items()]
    messages.extend(aligned.resampled)
    return SelectedInputs(images=aligned.images, nodes=nodes, reference=aligned.reference, messages=messages,
                          base_name=input_base_name(nodes, aligned.reference), native=images)


def selected_nodes(selected: Mapping[Sequence, Any]) -> dict:
    """The selected nodes by sequence, in sequence order, empty slots left out.

    A key is a :class:`~MRISynthesisLib.sequences.Sequence` or any name
    :func:`~MRISynthesisLib.sequences.parse_sequence` reads as one ("t1n", "T1", "flair").
    Raises ValueError for a key that names no sequence or two keys that name one, and
    TypeError for what only a script can pass: a list instead of a mapping, or a slot
    holding something other than an MRML node (a node name, a file path).
    """
    if not isinstance(selected, Mapping):
        raise TypeError("selected must be a mapping {sequence: volume node}, e.g. {Sequence.T1N: node}; "
                        f"got {type(selected).__name__}")
    by_sequence: dict = {}  # Sequence -> (key, node)
    for key, node in selected.items():
        sequence = _slot_sequence(key)
        if sequence in by_sequence:
            raise ValueError(f"selected: {_key_text(by_sequence[sequence][0])} and {_key_text(key)} "
                             f"both name the {sequence.short_name} input")
        by_sequence[sequence] = (key, node)
    nodes = {}
    for sequence in SEQUENCES:
        node = by_sequence.get(sequence, (None, None))[1]
        if node is None:
            continue
        if not isinstance(node, slicer.vtkMRMLNode):
            raise TypeError(f"{sequence.short_name} input ({sequence.value}) must be an MRML volume node, "
                            f"got {type(node).__name__} ({reprlib.repr(node)})")
        nodes[sequence] = node
    return nodes


def _key_text(key: Any) -> str:
    """A selection key as messages show it: a Sequence by its value ('t1n'), anything else by its short repr."""
    return repr(key.value) if isinstance(key, Sequence) else one_line(reprlib.repr(key))


def _slot_sequence(key: Any) -> Sequence:
    """The sequence a selection key names; ValueError naming the key and the accepted names otherwise."""
    if isinstance(key, (str, Sequence)):
        try:
            return parse_sequence(key)
        except UnknownSequenceError:
            pass
    known = ", ".join(f"{s.value} ({s.display_name})" for s in SEQUENCES)
    raise ValueError(f"selected: unknown sequence {_key_text(key)}; expected one of {known} "
                     "(a Sequence, or a name such as 'T1c', 't1ce' or 'flair')")


def _check_no_node_twice(nodes: Mapping[Sequence, Any]) -> None:
    """Refuse one node object in two slots (the same object, not just the same ID: IDs repeat across scenes)."""
    seen: list = []  # (node, sequence)
    for sequence, node in nodes.items():
        first = next((earlier for other, earlier in seen if other is node), None)
        if first is not None:
            raise MRMLInputError(f"{node_label(node)}: selected as both {first.short_name} and {sequence.short_name}")
        seen.append((node, sequence))


def input_base_name(nodes: Mapping[Sequence, Any], reference: Sequence) -> str:
    """The one-line case name of a run's input nodes (:func:`case_base_name` of their node labels)."""
    labels = [node_label(nodes[s]) for s in SEQUENCES if s in nodes]
    return case_base_name(labels, node_label(nodes[reference]))


def case_base_name(names: SequenceType[str], fallback: str) -> str:
    """The part of the input names that names the case ("BraTS-GLI-00000-000" for "...-t1n" etc.).

    With two or more inputs it is their common prefix cut back to a separator; otherwise,
    or when that prefix is too short to mean anything, ``fallback`` (the reference input name).
    """
    if len(names) >= 2:
        prefix = os.path.commonprefix(list(names))
        if not all(name == prefix for name in names):
            prefix = re.sub(r"[^\s_\-.]*$", "", prefix)  # cut a half-shared token
        prefix = prefix.rstrip(" _-.")
        if len(prefix) >= _MIN_CASE_NAME_CHARS:
            return prefix
    return fallback
