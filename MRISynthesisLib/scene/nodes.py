"""What every scene module says about a node: its one-line label, whether it is in the scene,
whether this tool made it, and the error that names a node that cannot be used; and the check
that a ``scene`` argument is an MRML scene."""
from __future__ import annotations

import re
from typing import Any

import slicer

__all__ = [
    "ATTRIBUTE_PREFIX",
    "MRMLInputError",
    "one_line",
    "node_label",
    "node_in_scene",
    "is_output_node",
    "check_scene",
]

#: Prefix of every node attribute and node reference the scene modules write ("MRISynthesis.Role", ...).
ATTRIBUTE_PREFIX = "MRISynthesis"

#: A run of control characters (C0, DEL, C1: newlines, tabs, escapes), Unicode line and paragraph
#: separators and bidirectional controls, with the blanks around it: one space in a one-line text.
_CONTROL_RUN = re.compile(r"\s*[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]+\s*")


class MRMLInputError(ValueError):
    """A node that cannot be used as input; the message names the node and the problem."""


def one_line(text: str | None) -> str:
    """``text`` on one line: each run of control characters (newlines, tabs, escapes) becomes one space.

    Blanks around such a run go with it; the ends are stripped. Other text is left as it is.
    """
    return _CONTROL_RUN.sub(" ", text or "").strip()


def node_label(node: Any) -> str:
    """The name used for a node in messages and result names: its name on one line, else its ID."""
    return one_line(node.GetName()) or node.GetID() or "unnamed node"


def node_in_scene(scene: Any, node: Any) -> bool:
    """True when ``node`` is in ``scene`` now.

    A Python reference outlives a node removed from the scene (its name and voxels still
    read fine), so membership is asked of the scene itself, by ID and identity.
    """
    if scene is None or node is None:
        return False
    node_id = node.GetID()
    return bool(node_id) and scene.GetNodeByID(node_id) is node


def is_output_node(node: Any) -> bool:
    """True for nodes this tool created (they carry ``MRISynthesis.Role``)."""
    return bool(node.GetAttribute(f"{ATTRIBUTE_PREFIX}.Role"))


def check_scene(scene: Any) -> None:
    """Refuse a ``scene`` argument that is not an MRML scene (None, a node, a name) with a one-line TypeError."""
    if not isinstance(scene, slicer.vtkMRMLScene):
        raise TypeError(f"scene must be an MRML scene, got {type(scene).__name__}")
