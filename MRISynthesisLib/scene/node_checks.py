"""Which nodes may be acquired MR inputs: one line that names the node and says why not, for nodes out of the
scene, nodes that are no scalar volume, label maps and synthetic volumes (by tag, description or file header).

The synthetic test is the engine's own (:func:`MRISynthesisLib.core.input_checks.is_synthetic`),
so the Slicer side and the command line never disagree on what counts as synthetic.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import SimpleITK as sitk

from ..core.input_checks import SYNTHETIC_MARK, is_synthetic
from .nodes import ATTRIBUTE_PREFIX, MRMLInputError, is_output_node, node_in_scene, node_label, one_line

__all__ = [
    "synthetic_text",
    "file_header",
    "node_file_path",
    "input_node_problem",
    "check_input_node",
]

#: What a node of another class is called when it is refused ("<name>: is a segmentation, not an MR image").
_NODE_KINDS = (
    ("vtkMRMLSegmentationNode", "a segmentation"),
    ("vtkMRMLModelNode", "a model"),
    ("vtkMRMLMarkupsNode", "a markups node"),
    ("vtkMRMLTransformNode", "a transform"),
    ("vtkMRMLTableNode", "a table"),
)

#: Volume classes whose voxels are vectors, tensors or gradients, never one MR intensity.
_NON_SCALAR_VOLUME_CLASSES = ("vtkMRMLTensorVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode")

#: Longest node description quoted in a message (descriptions may be paragraphs).
_QUOTED_DESCRIPTION_CHARS = 100
#: Header keys whose text is quoted when a file is refused as synthetic, in order of preference
#: (NIfTI/NRRD description, ITK's file notes, DICOM Series Description).
_DESCRIPTION_KEYS = ("descrip", "ITK_FileNotes", "0008|103e")


def _quoted(text: str, limit: int = _QUOTED_DESCRIPTION_CHARS) -> str:
    """One-line ``text`` cut to ``limit`` characters (with "...") for quoting in a message."""
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _kind_of_node(node: Any) -> str:
    """What a node that is not a volume is, for a message: "a segmentation", ..., "a <class> node"."""
    for class_name, kind in _NODE_KINDS:
        if node.IsA(class_name):
            return kind
    return f"a {node.GetClassName()} node"


def _components_per_voxel(node: Any) -> int:
    """Components per voxel of a volume node's image data (1 when it holds no voxels yet)."""
    image_data = node.GetImageData()
    scalars = image_data.GetPointData().GetScalars() if image_data is not None else None
    return scalars.GetNumberOfComponents() if scalars is not None else 1


def _scene_problem(node: Any, scene: Any, name: str) -> str | None:
    """Why ``node`` is not in ``scene`` (default: its own scene), as one line; None when it is.

    A node without an ID was never added to a scene; one with an ID has left its scene (a
    stale Python reference) or belongs to another scene.
    """
    if node_in_scene(scene if scene is not None else node.GetScene(), node):
        return None
    if not node.GetID():
        return f"{name}: is not in a scene (it was never added to one); select a volume that is in the scene"
    return f"{name}: is no longer in the scene (it was removed); select a volume that is in the scene"


def synthetic_text(metadata: Mapping[str, str]) -> str | None:
    """The one-line header text that marks a synthetic volume of this tool, else None.

    ``metadata``: header keys to values. The decision is the engine's own
    (:func:`~MRISynthesisLib.core.input_checks.is_synthetic`), made on a 1-voxel image that carries
    just these keys, so the two sides never disagree on what counts as synthetic.
    """
    probe = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    for key, value in metadata.items():
        probe.SetMetaData(key, value)
    if not is_synthetic(probe):
        return None
    texts = [metadata[key] for key in _DESCRIPTION_KEYS if key in metadata]
    marked = [text for text in texts if text.strip().upper().startswith(SYNTHETIC_MARK)]
    return _quoted(marked[0] if marked else SYNTHETIC_MARK)


def file_header(path: str) -> dict:
    """The header fields of an image file (``descrip``, ``ITK_FileNotes``, ...); its voxels are not read.

    Empty when the file cannot be read as an image: the node's voxels are already in memory,
    only the file's own mark is looked for here.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return {}
    return {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}


def node_file_path(node: Any) -> str | None:
    """The regular file a node was loaded from (its storage node's file), None when there is none now."""
    storage = node.GetStorageNode() if hasattr(node, "GetStorageNode") else None
    file_name = storage.GetFileName() if storage is not None else None
    path = storage.GetAbsoluteFilePath(file_name) if file_name else None
    return path if path and os.path.isfile(path) else None  # isfile: no FIFO or device is opened


def _synthetic_problem(node: Any, name: str) -> str | None:
    """Why a node without this tool's tag is still a synthetic volume (its description or its file), or None."""
    description = synthetic_text({"descrip": node.GetDescription() or ""})
    if description:
        return f"{name}: its description says it is a synthetic volume ('{description}'); select an acquired image"
    path = node_file_path(node)
    marked = synthetic_text(file_header(path)) if path else None
    if marked:
        return f"{name}: was loaded from {one_line(path)}, a synthetic volume ('{marked}'); select an acquired image"
    return None


def input_node_problem(node: Any, scene: Any = None) -> str | None:
    """Why ``node`` cannot be an acquired MR input, as one line that names it; None when it can.

    Refused: a node not in ``scene`` (default: the node's own scene; a stale Python reference
    or a node never added), nodes that are not volumes, label maps, synthetic volumes (this
    tool's own outputs, a node described as SYNTHETIC, or one loaded from a file whose
    header says SYNTHETIC: a synthetic volume must never be fed back as if it were acquired),
    and vector, tensor or other multi-component volumes.
    """
    name = node_label(node)
    problem = _scene_problem(node, scene, name)
    if problem:
        return problem
    if not node.IsA("vtkMRMLVolumeNode"):
        return f"{name}: is {_kind_of_node(node)}, not an MR image"
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        return f"{name}: is a label map, not an MR image"
    if is_output_node(node):
        role = node.GetAttribute(f"{ATTRIBUTE_PREFIX}.Role")
        return f"{name}: is a synthetic volume made by MRISynthesis ({role}); select an acquired image"
    problem = _synthetic_problem(node, name)
    if problem:
        return problem
    components = _components_per_voxel(node)
    if (components > 1 or not node.IsA("vtkMRMLScalarVolumeNode")
            or any(node.IsA(class_name) for class_name in _NON_SCALAR_VOLUME_CLASSES)):
        detail = f"{components} components per voxel" if components > 1 else node.GetClassName()
        return f"{name}: is a vector or multi-component volume ({detail}), not a scalar MR image"
    return None


def check_input_node(node: Any, scene: Any = None) -> None:
    """Raise :class:`MRMLInputError` (one line naming the node) when ``node`` is no MR input."""
    problem = input_node_problem(node, scene)
    if problem:
        raise MRMLInputError(problem)
