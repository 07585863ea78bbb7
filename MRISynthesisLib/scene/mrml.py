"""MRML side of the Slicer module: volume nodes <-> SimpleITK images, result nodes and their display.

Only this module knows MRML; it never imports Qt, so it runs headless on the ``slicer-core``
package (real MRML scene, nodes and logics) as well as inside the Slicer application.

Geometry: MRML stores a volume's IJK-to-RAS matrix, SimpleITK stores origin, spacing and
direction in LPS. The conversion between the two happens here and nowhere else
(:func:`ijk_to_ras_from_image`, :func:`image_geometry_from_ijk_to_ras`).

The module's flow, in the order the Slicer widget runs it:

1. :func:`assign_sequences` fills the four input slots from node names;
2. :func:`prepare_inputs` copies the selected volumes into images on one grid (main thread);
3. :mod:`MRISynthesisLib.core.jobs` runs the synthesis on those images (worker thread, no MRML);
4. :func:`add_result_nodes` turns the result into new nodes, :func:`show_result` displays them.

Input nodes are only read, never modified.
"""
from __future__ import annotations

import dataclasses
import os
import re
import reprlib
from typing import Any, Callable, Iterable, Mapping, Sequence as SequenceType

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

import slicer

from .. import __version__
from ..core.input_checks import SYNTHETIC_MARK, is_synthetic
from ..sequences import SEQUENCES, Sequence, guess_sequence

#: Prefix of every node attribute and node reference this module writes.
ATTRIBUTE_PREFIX = "MRISynthesis"

#: Roles of output nodes (value of the ``MRISynthesis.Role`` attribute).
ROLE_SYNTHETIC = "synthetic"
ROLE_STAGE1 = "stage1"
ROLE_REFINEMENT = "refinement map"
ROLE_TUMOUR = "tumour map"
ROLE_ERROR = "error map"

#: Node-name suffix per role, after the target's short name ("... T1c (synthetic)").
ROLE_NAME_SUFFIX: dict[str, str] = {
    ROLE_SYNTHETIC: "(synthetic)",
    ROLE_STAGE1: "(synthetic, stage 1)",
    ROLE_REFINEMENT: "refinement map",
    ROLE_TUMOUR: "tumour map",
    ROLE_ERROR: "error map",
}

#: Percentiles of the brain region that set the synthetic volume's window/level.
SYNTHETIC_WINDOW_PERCENTILES = (1.0, 99.5)
#: Percentile of |map| (non-zero voxels) that sets the colour range of a map.
MAP_RANGE_PERCENTILE = 99.0
#: Opacity of the map shown as foreground over the synthetic volume.
OVERLAY_OPACITY = 0.4
#: Map values within this fraction of the colour range around zero are transparent.
OVERLAY_DEAD_ZONE = 0.05

#: Names of the colour tables this module adds to a scene (created once per scene).
DIVERGING_COLOR_NAME = "MRISynthesis diverging"
MAGNITUDE_COLOR_NAME = "MRISynthesis magnitude"

#: Message when a caller passes no result (``Job.take_result()`` is None for a cancelled or failed job).
NO_RESULT_MESSAGE = "no result to add (the job was cancelled or failed)"

# LPS (SimpleITK, DICOM) and RAS (Slicer) differ by the sign of the first two axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

#: A run of control characters (C0, DEL, C1: newlines, tabs, escapes), Unicode line and paragraph
#: separators and bidirectional controls, with the blanks around it: one space in a one-line text.
_CONTROL_RUN = re.compile(r"\s*[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]+\s*")
#: Longest node description quoted in a message (descriptions may be paragraphs).
_QUOTED_DESCRIPTION_CHARS = 100
#: Header keys whose text is quoted when a file is refused as synthetic, in order of preference
#: (NIfTI/NRRD description, ITK's file notes, DICOM Series Description).
_DESCRIPTION_KEYS = ("descrip", "ITK_FileNotes", "0008|103e")


class MRMLInputError(ValueError):
    """A node that cannot be used as input; the message names the node and the problem."""


# --------------------------------------------------------------------------- geometry


def ijk_to_ras_from_image(image: sitk.Image) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of a SimpleITK image (its geometry is LPS)."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = _LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=float)
    return matrix


def image_geometry_from_ijk_to_ras(matrix: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """``(spacing, origin, direction)`` in SimpleITK's LPS convention from an IJK-to-RAS matrix."""
    matrix = np.asarray(matrix, dtype=float)
    lps = _LPS_TO_RAS @ matrix[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    origin = _LPS_TO_RAS @ matrix[:3, 3]
    return tuple(spacing.tolist()), tuple(origin.tolist()), tuple(direction.ravel().tolist())


def _vtk_to_numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, col) for col in range(4)] for row in range(4)])


def _numpy_to_vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            matrix.SetElement(row, col, float(array[row, col]))
    return matrix


def world_ijk_to_ras(node: Any) -> np.ndarray:
    """The node's IJK-to-RAS matrix in world coordinates (a linear parent transform included)."""
    local = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(local)
    matrix = _vtk_to_numpy_matrix(local)
    transform = node.GetParentTransformNode()
    if transform is None:
        return matrix
    if not transform.IsTransformToWorldLinear():
        raise MRMLInputError(
            f"{node_label(node)}: is under a non-linear transform ({node_label(transform)}); harden it first"
        )
    to_world = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(to_world)
    return _vtk_to_numpy_matrix(to_world) @ matrix


# --------------------------------------------------------------------------- node <-> image


def image_from_volume_node(node: Any) -> sitk.Image:
    """Copy a scalar volume node into a SimpleITK image with the same voxels and world geometry."""
    if node is None:
        raise MRMLInputError("no volume node given")
    name = node_label(node)
    image_data = node.GetImageData()
    if image_data is None or image_data.GetPointData().GetScalars() is None:
        raise MRMLInputError(f"{name}: volume node holds no voxels")
    scalars = image_data.GetPointData().GetScalars()
    if scalars.GetNumberOfComponents() != 1:
        raise MRMLInputError(f"{name}: has {scalars.GetNumberOfComponents()} components per voxel; "
                             "expected a scalar volume")
    size = image_data.GetDimensions()
    array = numpy_support.vtk_to_numpy(scalars).reshape(tuple(reversed(size)))
    image = sitk.GetImageFromArray(array)  # copies: the node's voxels are never shared
    spacing, origin, direction = image_geometry_from_ijk_to_ras(world_ijk_to_ras(node))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _image_data_from_image(image: sitk.Image) -> vtk.vtkImageData:
    """vtkImageData (origin 0, spacing 1, as MRML expects) holding a copy of the image's voxels."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"expected a 3D scalar image, got {image.GetDimension()}D with "
                         f"{image.GetNumberOfComponentsPerPixel()} components")
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image))
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(image.GetSize())
    vtk_array = numpy_support.numpy_to_vtk(array.ravel(), deep=True,
                                           array_type=numpy_support.get_vtk_array_type(array.dtype))
    image_data.GetPointData().SetScalars(vtk_array)
    return image_data


def update_volume_node_from_image(node: Any, image: sitk.Image) -> Any:
    """Set a volume node's voxels and IJK-to-RAS matrix from a SimpleITK image."""
    node.SetIJKToRASMatrix(_numpy_to_vtk_matrix(ijk_to_ras_from_image(image)))
    node.SetAndObserveImageData(_image_data_from_image(image))
    return node


def volume_node_from_image(scene: Any, image: sitk.Image, name: str,
                           class_name: str = "vtkMRMLScalarVolumeNode") -> Any:
    """Add a new volume node (with display node) holding a copy of ``image``; the name is made unique."""
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    update_volume_node_from_image(node, image)
    node.CreateDefaultDisplayNodes()
    return node


# --------------------------------------------------------------------------- choosing inputs


def is_output_node(node: Any) -> bool:
    """True for nodes this module created (they carry ``MRISynthesis.Role``)."""
    return bool(node.GetAttribute(f"{ATTRIBUTE_PREFIX}.Role"))


def candidate_input_nodes(scene: Any) -> list:
    """Scalar volumes that may be inputs: not label maps and not outputs of this module."""
    nodes = []
    collection = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    for index in range(collection.GetNumberOfItems()):
        node = collection.GetItemAsObject(index)
        if node.IsA("vtkMRMLLabelMapVolumeNode") or is_output_node(node):
            continue
        nodes.append(node)
    return nodes


@dataclasses.dataclass
class Assignment:
    """Input slots filled from node names; a slot stays empty when its choice is not clear."""

    nodes: dict  # Sequence -> node or None
    ambiguous: dict  # Sequence -> names of the several nodes that look like it
    unrecognised: list  # names that name no sequence, or several

    def notes(self) -> list[str]:
        """One line per slot left empty for a reason the user should know."""
        lines = []
        for sequence, names in self.ambiguous.items():
            lines.append(f"{len(names)} volumes look like {sequence.short_name} "
                         f"({', '.join(names)}): choose one")
        return lines


def assign_sequences(nodes: Iterable[Any]) -> Assignment:
    """Map volume nodes to the four sequences by name (:func:`guess_sequence` aliases).

    A sequence claimed by exactly one node gets it; a sequence claimed by several, and names
    that are ambiguous themselves ("t1_t2_fusion"), are left empty for the user to choose.
    """
    claims: dict[Sequence, list] = {sequence: [] for sequence in SEQUENCES}
    unrecognised = []
    for node in nodes:
        sequence = guess_sequence(node.GetName() or "")
        if sequence is None:
            unrecognised.append(node_label(node))
        else:
            claims[sequence].append(node)
    chosen = {sequence: (found[0] if len(found) == 1 else None) for sequence, found in claims.items()}
    ambiguous = {sequence: [node_label(node) for node in found]
                 for sequence, found in claims.items() if len(found) > 1}
    return Assignment(nodes=chosen, ambiguous=ambiguous, unrecognised=unrecognised)


def fill_empty_slots(current: Mapping[Sequence, Any], scene: Any) -> dict:
    """The current selection with empty slots filled by :func:`assign_sequences` (choices kept).

    A node the user already put in one slot is not proposed for another.
    """
    used = {node.GetID() for node in current.values() if node is not None}
    free = [node for node in candidate_input_nodes(scene) if node.GetID() not in used]
    proposal = assign_sequences(free).nodes
    return {sequence: current.get(sequence) or proposal.get(sequence) for sequence in SEQUENCES}


def assignment_notes(selected: Mapping[Sequence, Any], scene: Any) -> list[str]:
    """Why empty slots stayed empty: one line per sequence that several scene volumes look like."""
    ambiguous = assign_sequences(candidate_input_nodes(scene)).ambiguous
    empty = {s: names for s, names in ambiguous.items() if selected.get(s) is None}
    return Assignment(nodes={}, ambiguous=empty, unrecognised=[]).notes()


@dataclasses.dataclass
class SelectionState:
    """What the module panel shows for a selection: missing line, button texts and whether they run."""

    present: list
    missing: list
    missing_text: str
    synthesize_enabled: bool
    synthesize_text: str
    synthesize_tooltip: str
    validate_enabled: bool
    validate_tooltip: str


def selection_state(selected: Mapping[Sequence, Any], model_problem: str = "", busy: bool = False
                    ) -> SelectionState:
    """Decide labels, tooltips and enabled states; a disabled button's tooltip says why.

    ``model_problem``: empty when a model is available, otherwise the reason it is not.
    """
    present = [s for s in SEQUENCES if selected.get(s) is not None]
    missing = [s for s in SEQUENCES if selected.get(s) is None]
    if not present:
        missing_text = "No input volume selected."
    elif not missing:
        missing_text = "All four sequences are present."
    else:
        missing_text = "Missing: " + ", ".join(s.display_name for s in missing)
    names = " + ".join(s.short_name for s in missing)
    synthesize_text = f"Synthesize {names}" if present and missing else "Synthesize missing"
    reason = ""
    if busy:
        reason = "A synthesis is running; wait for it or cancel it."
    elif not present:
        reason = "Select at least one input volume (T1, T1c, T2 or FLAIR)."
    elif not missing:
        reason = "Nothing is missing: all four sequences are selected. Use Validate on this case."
    elif model_problem:
        reason = model_problem
    plan = (f"Synthesize {', '.join(s.display_name for s in missing)} "
            f"from {', '.join(s.display_name for s in present)}.")
    synthesize_tooltip = reason or plan
    validate_reason = ""
    if busy:
        validate_reason = "A synthesis is running; wait for it or cancel it."
    elif missing:
        validate_reason = "Validation needs all four sequences (each is synthesised from the other three)."
    elif model_problem:
        validate_reason = model_problem
    validate_tooltip = validate_reason or (
        "Leave-one-out: synthesise each sequence from the other three and compare with the acquired one.")
    return SelectionState(
        present=present, missing=missing, missing_text=missing_text,
        synthesize_enabled=not reason, synthesize_text=synthesize_text, synthesize_tooltip=synthesize_tooltip,
        validate_enabled=not validate_reason, validate_tooltip=validate_tooltip,
    )


# --------------------------------------------------------------------------- inputs for the engine


@dataclasses.dataclass
class PreparedInputs:
    """Copies of the selected volumes on one grid, the nodes they came from and what was done."""

    images: dict  # Sequence -> sitk.Image (on the reference grid)
    nodes: dict  # Sequence -> node
    reference: Sequence
    messages: list
    #: One-line name that output nodes and folders start with, fixed when the job starts
    #: (:func:`input_base_name`): renaming an input during the run does not change it.
    base_name: str = ""

    def __post_init__(self) -> None:
        if not self.base_name and self.reference in self.nodes:
            self.base_name = input_base_name(self.nodes, self.reference)


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


def one_line(text: str | None) -> str:
    """``text`` on one line: each run of control characters (newlines, tabs, escapes) becomes one space.

    Blanks around such a run go with it; the ends are stripped. Other text is left as it is.
    """
    return _CONTROL_RUN.sub(" ", text or "").strip()


def node_label(node: Any) -> str:
    """The name used for a node in messages and result names: its name on one line, else its ID."""
    return one_line(node.GetName()) or node.GetID() or "unnamed node"


def _quoted(text: str, limit: int = _QUOTED_DESCRIPTION_CHARS) -> str:
    """One-line ``text`` cut to ``limit`` characters (with "...") for quoting in a message."""
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def node_in_scene(scene: Any, node: Any) -> bool:
    """True when ``node`` is in ``scene`` now.

    A Python reference outlives a node removed from the scene (its name and voxels still
    read fine), so membership is asked of the scene itself, by ID and identity.
    """
    if scene is None or node is None:
        return False
    node_id = node.GetID()
    return bool(node_id) and scene.GetNodeByID(node_id) is node


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
    """Why a node without this module's tag is still a synthetic volume (its description or its file), or None."""
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
    module's own outputs, a node described as SYNTHETIC, or one loaded from a file whose
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


def prepare_inputs(selected: Mapping[Sequence, Any], scene: Any = None) -> PreparedInputs:
    """Copy the selected nodes into images and put them on the first selected input's grid.

    Runs on the main thread (it reads MRML); the images it returns share nothing with the
    nodes, so a worker thread may use them while the user keeps working in the scene.
    Every node is checked first (:func:`check_input_node`, in ``scene`` when given, else in
    its own scene) and its voxels after (:func:`image_from_input_node`); the first problem
    is raised as :class:`MRMLInputError` naming the node.
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
    return PreparedInputs(images=aligned.images, nodes=nodes, reference=aligned.reference, messages=messages,
                          base_name=input_base_name(nodes, aligned.reference))


def selected_nodes(selected: Mapping[Sequence, Any]) -> dict:
    """The selected nodes by sequence, in sequence order, empty slots left out.

    Raises TypeError for what only a script can pass: a list instead of a mapping, or a slot
    holding something other than an MRML node (a node name, a file path).
    """
    if not isinstance(selected, Mapping):
        raise TypeError("selected must be a mapping {sequence: volume node}, e.g. {Sequence.T1N: node}; "
                        f"got {type(selected).__name__}")
    nodes = {}
    for sequence in SEQUENCES:
        node = selected.get(sequence)
        if node is None:
            continue
        if not isinstance(node, slicer.vtkMRMLNode):
            raise TypeError(f"{sequence.short_name} input ({sequence.value}) must be an MRML volume node, "
                            f"got {type(node).__name__} ({reprlib.repr(node)})")
        nodes[sequence] = node
    return nodes


def _check_no_node_twice(nodes: Mapping[Sequence, Any]) -> None:
    """Refuse one node object in two slots (the same object, not just the same ID: IDs repeat across scenes)."""
    seen: list = []  # (node, sequence)
    for sequence, node in nodes.items():
        first = next((earlier for other, earlier in seen if other is node), None)
        if first is not None:
            raise MRMLInputError(f"{node_label(node)}: selected as both {first.short_name} and {sequence.short_name}")
        seen.append((node, sequence))


def input_base_name(nodes: Mapping[Sequence, Any], reference: Sequence) -> str:
    """The one-line case name of a run's input nodes (:func:`case_base_name` of their :func:`node_label`)."""
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
        if len(prefix) >= 3:
            return prefix
    return fallback


def result_node_name(base: str, sequence: Sequence, role: str) -> str:
    """``"<base> T1c (synthetic)"``, ``"<base> T1c refinement map"``, ... on one line."""
    return one_line(f"{base} {sequence.short_name} {ROLE_NAME_SUFFIX[role]}")


# --------------------------------------------------------------------------- result nodes


@dataclasses.dataclass
class TargetNodes:
    """The nodes made for one target sequence."""

    sequence: Sequence
    synthetic: Any
    stage1: Any = None
    refinement_map: Any = None
    tumour_map: Any = None
    error_map: Any = None

    def maps(self) -> list:
        """Map nodes present, in the order they are preferred as overlay (error, refinement, tumour)."""
        return [n for n in (self.error_map, self.refinement_map, self.tumour_map) if n is not None]

    def all_nodes(self) -> list:
        return [n for n in (self.synthetic, self.stage1, self.refinement_map, self.tumour_map, self.error_map)
                if n is not None]


@dataclasses.dataclass
class ResultNodes:
    """Everything one run added to the scene."""

    folder_item: int
    targets: dict  # Sequence -> TargetNodes
    table: Any = None
    messages: list = dataclasses.field(default_factory=list)  # one line each, for the user's log

    def all_nodes(self) -> list:
        nodes = [n for target in self.targets.values() for n in target.all_nodes()]
        return nodes + ([self.table] if self.table is not None else [])


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


def _place_in_folder(scene: Any, node: Any, folder_item: int) -> None:
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


def _check_result(result: Any) -> None:
    """Refuse what is not one synthesis result: None (no result), a list (validation results), other objects."""
    if result is None:
        raise ValueError(NO_RESULT_MESSAGE)
    if isinstance(result, (list, tuple)):
        raise TypeError(f"expected one SynthesisResult, got {type(result).__name__}; "
                        "a validation's results (one per sequence) go to add_validation_nodes")
    if not isinstance(getattr(result, "targets", None), Mapping):
        raise TypeError(f"expected a SynthesisResult, got {type(result).__name__}")


def _check_prepared(prepared: Any) -> None:
    """Refuse ``prepared`` that is not the :class:`PreparedInputs` of the job's inputs."""
    if not isinstance(prepared, PreparedInputs):
        raise TypeError("prepared must be the PreparedInputs that prepare_inputs returned for this job, "
                        f"got {type(prepared).__name__}")


def _validation_results(results: Any) -> list:
    """The results of a validation job as a non-empty list, each checked by :func:`_check_result`."""
    if results is None:
        raise ValueError(NO_RESULT_MESSAGE)
    if hasattr(results, "targets"):
        raise TypeError("expected the list of validation results (one SynthesisResult per sequence), got one "
                        f"{type(results).__name__}; a single synthesis result goes to add_result_nodes")
    results = list(results)
    if not results:
        raise ValueError(NO_RESULT_MESSAGE)
    for result in results:
        _check_result(result)
    return results


def add_result_nodes(scene: Any, result: Any, prepared: PreparedInputs, keep_stage1: bool = False,
                     folder_name: str | None = None, folder_item: int | None = None) -> ResultNodes:
    """Turn a :class:`~MRISynthesisLib.core.pipeline.SynthesisResult` into nodes in a folder beside the inputs.

    Per target: the synthetic volume, optionally the stage-1 volume, and whichever maps the
    result holds (refinement, tumour, error). Each node gets a name, a description and
    attributes that say it is synthetic, the model and the inputs. Nodes go into ``folder_item``
    when given, else into a new folder. Nothing is shown in the views yet (see :func:`show_result`).

    Inputs may have left the scene while the job ran: nodes then reference only the inputs
    still there, the description keeps a removed input's name with a note, the folder goes
    beside a remaining input (or at the scene level) and ``messages`` says so, one line each.
    Names come from ``prepared.base_name``, fixed when the job started.

    Raises ValueError when ``result`` is None (what ``Job.take_result()`` gives for a cancelled
    or failed job) and TypeError for arguments of the wrong kind; nothing is added then.
    """
    _check_result(result)
    _check_prepared(prepared)
    base = prepared.base_name
    presence = input_presence(scene, prepared.nodes)
    targets_text = " + ".join(Sequence(s).short_name for s in result.targets)
    folder = folder_item or create_result_folder(scene, presence.anchor(prepared.reference),
                                                 one_line(folder_name or f"{base} synthetic {targets_text}"))
    inputs_text = _describe_inputs([Sequence(s) for s in result.inputs], prepared.nodes, presence.removed)
    made: dict = {}
    for key, target in result.targets.items():
        sequence = Sequence(key)
        images = {ROLE_SYNTHETIC: target.synthetic, ROLE_STAGE1: target.stage1 if keep_stage1 else None,
                  ROLE_REFINEMENT: target.refinement_map, ROLE_TUMOUR: target.tumour_map,
                  ROLE_ERROR: target.error_map}
        nodes: dict[str, Any] = {}
        for role, image in images.items():
            if image is None:
                continue
            node = volume_node_from_image(scene, image, result_node_name(base, sequence, role))
            _tag_node(node, role, sequence, result, presence.present, inputs_text)
            _place_in_folder(scene, node, folder)
            nodes[role] = node
        for role, node in nodes.items():
            if role != ROLE_SYNTHETIC:
                node.SetNodeReferenceID(f"{ATTRIBUTE_PREFIX}.Synthetic", nodes[ROLE_SYNTHETIC].GetID())
        made[sequence] = TargetNodes(
            sequence=sequence, synthetic=nodes[ROLE_SYNTHETIC], stage1=nodes.get(ROLE_STAGE1),
            refinement_map=nodes.get(ROLE_REFINEMENT), tumour_map=nodes.get(ROLE_TUMOUR),
            error_map=nodes.get(ROLE_ERROR))
        set_result_display(scene, made[sequence], target)
    return ResultNodes(folder_item=folder, targets=made, messages=presence.messages())


# --------------------------------------------------------------------------- display


def brain_window(image: sitk.Image, percentiles: tuple[float, float] = SYNTHETIC_WINDOW_PERCENTILES
                 ) -> tuple[float, float]:
    """(low, high) display range: percentiles of the non-zero (brain) voxels, all voxels if none."""
    array = sitk.GetArrayViewFromImage(image)
    values = array[array != 0]
    if values.size == 0:
        values = array.ravel()
    low, high = np.percentile(values, percentiles)
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


def map_range(image: sitk.Image, percentile: float = MAP_RANGE_PERCENTILE) -> float:
    """Positive colour-range limit of a map: a high percentile of |non-zero voxels| (1 if all zero)."""
    array = np.abs(sitk.GetArrayViewFromImage(image))
    values = array[array > 0]
    if values.size == 0:
        return 1.0
    limit = float(np.percentile(values, percentile))
    return limit if limit > 0 else float(values.max())


def _color_table(scene: Any, name: str, colours: np.ndarray) -> Any:
    """The scene's colour table called ``name`` (made by this module), created once from RGBA rows."""
    existing = scene.GetFirstNodeByName(name)
    if existing is not None and existing.GetAttribute(f"{ATTRIBUTE_PREFIX}.ColorTable") == name:
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetTypeToUser()
    table.SetNumberOfColors(len(colours))
    table.SetAttribute(f"{ATTRIBUTE_PREFIX}.ColorTable", name)
    for index, (red, green, blue, alpha) in enumerate(colours):
        table.SetColor(index, f"{index}", float(red), float(green), float(blue), float(alpha))
    return table


def diverging_colours(count: int = 255, dead_zone: float = OVERLAY_DEAD_ZONE) -> np.ndarray:
    """RGBA rows: blue to cyan (negative), transparent near zero, red to yellow (positive).

    Slicer's slice views treat a colour's alpha as on/off (any alpha > 0 is opaque), so the
    values within ``dead_zone`` of the range around zero get alpha 0 and show the volume below;
    strength is shown by the hue instead. An odd ``count`` puts one entry exactly at zero.
    """
    t = np.linspace(-1.0, 1.0, count)
    strength = np.abs(t)
    negative = np.column_stack([np.zeros_like(t), strength, np.ones_like(t)])
    positive = np.column_stack([np.ones_like(t), strength, np.zeros_like(t)])
    rgb = np.where(t[:, None] < 0, negative, positive)
    alpha = (strength > dead_zone).astype(float)
    return np.column_stack([rgb, alpha])


def magnitude_colours(count: int = 256, dead_zone: float = OVERLAY_DEAD_ZONE) -> np.ndarray:
    """RGBA rows for non-negative maps: transparent near zero, then red - yellow - white."""
    t = np.linspace(0.0, 1.0, count)
    rgb = np.column_stack([np.ones_like(t), np.clip(2.0 * t, 0, 1), np.clip(2.0 * t - 1.0, 0, 1)])
    alpha = (t > dead_zone).astype(float)
    return np.column_stack([rgb, alpha])


def diverging_color_node(scene: Any) -> Any:
    return _color_table(scene, DIVERGING_COLOR_NAME, diverging_colours())


def magnitude_color_node(scene: Any) -> Any:
    return _color_table(scene, MAGNITUDE_COLOR_NAME, magnitude_colours())


def _display_node(node: Any) -> Any:
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    return display


def set_volume_display(node: Any, image: sitk.Image) -> None:
    """Grey scale with window/level from the brain-region percentiles of ``image``."""
    display = _display_node(node)
    low, high = brain_window(image)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, high)


def set_map_display(scene: Any, node: Any, image: sitk.Image, signed: bool) -> None:
    """Colour a map: diverging and symmetric about 0 when ``signed``, else magnitude from 0."""
    display = _display_node(node)
    limit = map_range(image)
    colour = diverging_color_node(scene) if signed else magnitude_color_node(scene)
    display.SetAndObserveColorNodeID(colour.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(-limit if signed else 0.0, limit)


def set_result_display(scene: Any, nodes: TargetNodes, target: Any) -> None:
    """Display settings of one target's nodes (volumes grey, maps coloured)."""
    set_volume_display(nodes.synthetic, target.synthetic)
    if nodes.stage1 is not None:
        set_volume_display(nodes.stage1, target.stage1)
    if nodes.refinement_map is not None:
        set_map_display(scene, nodes.refinement_map, target.refinement_map, signed=True)
    if nodes.tumour_map is not None:
        set_map_display(scene, nodes.tumour_map, target.tumour_map, signed=False)
    if nodes.error_map is not None:
        set_map_display(scene, nodes.error_map, target.error_map, signed=False)


def slice_composite_nodes(scene: Any) -> list:
    collection = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def show_in_slice_views(scene: Any, background: Any, foreground: Any = None,
                        opacity: float = OVERLAY_OPACITY) -> None:
    """Background volume, optional foreground map at ``opacity``, in every slice view, views linked."""
    for composite in slice_composite_nodes(scene):
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(opacity if foreground is not None else 0.0)
        composite.SetLinkedControl(True)
    _fit_slice_views()


def _fit_slice_views() -> None:
    """Fit the slice views to the shown volumes; only the Slicer application has views (headless: nothing)."""
    if getattr(slicer, "app", None) is None or getattr(slicer.app, "layoutManager", lambda: None)() is None:
        return
    slicer.util.resetSliceViews()


def show_result(scene: Any, nodes: ResultNodes, sequence: Sequence | None = None) -> TargetNodes:
    """Show one target (default: T1c if made, else the first) as background with its preferred map on top."""
    if sequence is None:
        sequence = Sequence.T1C if Sequence.T1C in nodes.targets else next(iter(nodes.targets))
    chosen = nodes.targets[sequence]
    overlay = chosen.maps()[0] if chosen.maps() else None
    show_in_slice_views(scene, chosen.synthetic, overlay)
    return chosen


# --------------------------------------------------------------------------- validation table

#: Column titles of known metric keys; unknown keys keep their own name.
METRIC_TITLES: dict[str, str] = {
    "ssim": "SSIM", "ssim_tumour": "SSIM tumour", "ssim_healthy": "SSIM healthy",
    "psnr": "PSNR (dB)", "nmse": "NMSE", "mae": "MAE", "ssim_volume": "SSIM volume",
}


def metrics_rows(results: Iterable[Any]) -> tuple[list[str], list[tuple[Sequence, list[float]]]]:
    """Metric keys (first-seen order) and one row of values per target over several results."""
    keys: list[str] = []
    rows: list[tuple[Sequence, dict]] = []
    for result in results:
        for key, target in result.targets.items():
            metrics = dict(target.metrics or {})
            keys.extend(k for k in metrics if k not in keys)
            rows.append((Sequence(key), metrics))
    rows.sort(key=lambda row: SEQUENCES.index(row[0]))
    return keys, [(sequence, [float(m.get(k, float("nan"))) for k in keys]) for sequence, m in rows]


def metrics_table_node(scene: Any, results: Iterable[Any], name: str = "MRISynthesis validation") -> Any:
    """A table node: one row per synthesised sequence, one column per metric."""
    keys, rows = metrics_rows(results)
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    table = table_node.GetTable()
    names = vtk.vtkStringArray()
    names.SetName("Sequence")
    for sequence, _ in rows:
        names.InsertNextValue(sequence.display_name)
    table.AddColumn(names)
    for index, key in enumerate(keys):
        column = vtk.vtkDoubleArray()
        column.SetName(METRIC_TITLES.get(key, key))
        for _, values in rows:
            column.InsertNextValue(values[index])
        table.AddColumn(column)
    table_node.SetAttribute(f"{ATTRIBUTE_PREFIX}.Role", "validation table")
    table_node.SetAttribute(f"{ATTRIBUTE_PREFIX}.Version", __version__)
    table_node.Modified()
    return table_node


def add_validation_nodes(scene: Any, results: Iterable[Any], prepared: PreparedInputs) -> ResultNodes:
    """Leave-one-out results (one SynthesisResult per sequence) as nodes and a metrics table, in one folder.

    Inputs removed from the scene while the job ran are handled as in :func:`add_result_nodes`;
    None or no results raise ValueError (a cancelled or failed job), nothing is added then.
    """
    results = _validation_results(results)
    _check_prepared(prepared)
    presence = input_presence(scene, prepared.nodes)
    base = one_line(prepared.base_name)
    folder = create_result_folder(scene, presence.anchor(prepared.reference), f"{base} validation")
    targets: dict = {}
    for result in results:
        targets.update(add_result_nodes(scene, result, prepared, folder_item=folder).targets)
    table = metrics_table_node(scene, results, name=f"{base} validation metrics")
    _place_in_folder(scene, table, folder)
    return ResultNodes(folder_item=folder, targets=targets, table=table, messages=presence.messages())


# --------------------------------------------------------------------------- cases and whole flow


def add_case_nodes(scene: Any, images: Mapping[Any, sitk.Image], case_id: str,
                   label: sitk.Image | None = None) -> dict:
    """Load a case's images as ``<case>-t1n`` ... volumes (and ``<case>-seg`` label map) into the scene."""
    nodes: dict = {}
    for key in sorted(images, key=lambda k: SEQUENCES.index(Sequence(k))):
        sequence = Sequence(key)
        node = volume_node_from_image(scene, images[key], f"{case_id}-{sequence.value}")
        set_volume_display(node, images[key])
        nodes[sequence] = node
    if label is not None:
        nodes["label"] = volume_node_from_image(scene, sitk.Cast(label, sitk.sitkUInt8), f"{case_id}-seg",
                                                class_name="vtkMRMLLabelMapVolumeNode")
    return nodes


def add_phantom_case(scene: Any, seed: int = 0, small: bool = False) -> dict:
    """Generate a phantom case (:func:`MRISynthesisLib.phantom.generate_case`) and load it into the scene."""
    from ..phantom import generate_case

    case = generate_case(seed, small=small)
    return add_case_nodes(scene, case.images, case.case_id, label=case.label)


def synthesize_in_scene(scene: Any, selected: Mapping[Sequence, Any], bundle: Any, *, device: str = "auto",
                        keep_stage1: bool = False, tumour_maps: bool = True, targets=None,
                        synthesize: Callable | None = None, show: bool = True,
                        log: Callable[[str], None] | None = None) -> ResultNodes:
    """The module's whole flow without Qt and without a thread: nodes -> images -> synthesis -> nodes.

    Used by the self-test and by scripts; the widget runs the same steps with the synthesis
    in a :class:`~MRISynthesisLib.core.jobs.Job`.
    """
    from ..core.jobs import JobContext, synthesis_task

    say = log or (lambda text: None)
    prepared = prepare_inputs(selected, scene)
    for line in prepared.messages:
        say(line)
    task = synthesis_task(prepared.images, bundle, targets=targets, device=device, tumour_maps=tumour_maps,
                          synthesize=synthesize)
    result = task(JobContext())
    for line in list(result.messages):
        say(line)
    nodes = add_result_nodes(scene, result, prepared, keep_stage1=keep_stage1)
    for line in nodes.messages:
        say(line)
    if show:
        show_result(scene, nodes)
    return nodes
