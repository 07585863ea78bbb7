"""Brain extraction by a Slicer extension for *Prepare inputs*: *HD Brain Extraction* or *Swiss Skull Stripper*.

Inside Slicer a user may already have one of two skull-stripping extensions from the Extensions
Manager. Either makes the brain mask of the reference volume here, in Slicer's own process, before
the worker prepares the study with it (as a user-given mask):

* *HD Brain Extraction* (``HDBrainExtractionTool``, a scripted module wrapping HD-BET): its logic's
  ``setupPythonRequirements()`` installs what it needs (after asking) and
  ``process(inputVolume, outputVolume, outputSegmentation, device)`` fills a segmentation whose
  one segment is the brain; HD-BET fetches its weights on first use;
* *Swiss Skull Stripper* (``SwissSkullStripper``, a command-line module: atlas registration and a
  level set): parameters ``patientVolume`` (input), ``patientOutputVolume`` (the masked volume)
  and ``patientMaskLabel`` (the brain label map); its own atlas is used when none is given.

Both run blocking, as in their own panels (Swiss Skull Stripper a minute or two, HD Brain Extraction
several minutes on a CPU). The mask node they make stays in the scene, named after the tool and the
volume and placed beside the volume in the subject hierarchy, so the user can check it; it is checked
here like any other brain mask (not empty, the volume of a brain), and everything else the tool
added is removed, also when it fails. HD Brain Extraction's ``setupPythonRequirements()`` may
download HD-BET and pip-install packages without asking (only PyTorch is confirmed), so the panel
asks first (:func:`needs_consent`). The calls into the extensions are passed in (``modules``,
``cli``, ``import_module``): in Slicer they are ``slicer.modules``, ``slicer.cli`` (``createNode``
and ``runSync``) and ``importlib.import_module``; elsewhere (tests on ``slicer-core``) stand-ins
with the same interface.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Dict, List, Optional

from ..clinical.brain_masks import BrainExtractionError, check_brain_mask, needed_the_network
from .brain_mask_nodes import brain_mask_from_node
from .nodes import MRMLInputError, node_label, one_line

__all__ = ["ExtensionBackend", "EXTENSION_BACKENDS", "installed_extension_backends", "needs_consent",
           "extension_brain_mask"]


@dataclasses.dataclass(frozen=True)
class ExtensionBackend:
    """A Slicer extension that makes brain masks: its key, the title users know, its module and extension names."""

    key: str
    title: str
    module: str
    extension: str

    def installed(self, modules: Any) -> bool:
        """Whether Slicer loaded the extension's module (``slicer.modules`` has it, in lower case)."""
        return modules is not None and hasattr(modules, self.module.lower())


#: The extension backends by key (the key is what the panel and the parameter node store).
EXTENSION_BACKENDS: Dict[str, ExtensionBackend] = {
    backend.key: backend for backend in (
        ExtensionBackend("hd-brain-extraction", "HD Brain Extraction", "HDBrainExtractionTool", "HDBrainExtraction"),
        ExtensionBackend("swiss-skull-stripper", "Swiss Skull Stripper", "SwissSkullStripper", "SwissSkullStripper"),
    )
}

#: The Swiss Skull Stripper's command-line parameters (its module description): input, masked output, label map.
SWISS_PARAMETERS = ("patientVolume", "patientOutputVolume", "patientMaskLabel")


def installed_extension_backends(modules: Any) -> List[str]:
    """Keys of the extension backends whose modules Slicer loaded."""
    return [key for key, backend in EXTENSION_BACKENDS.items() if backend.installed(modules)]


def _mask_name(backend: ExtensionBackend, reference: Any) -> str:
    return f"{reference.GetName()} brain mask ({backend.title})"


def _place_beside(node: Any, reference: Any) -> None:
    """Put ``node`` in the reference volume's folder/study of the subject hierarchy (where a user looks for it)."""
    import slicer

    scene = reference.GetScene()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    parent = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(reference))
    if not parent:
        return
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:  # no subject-hierarchy plugin made an item for the node (slicer-core without the application)
        hierarchy.CreateItem(parent, node)


def _cli_failure(cli_node: Any) -> Optional[str]:
    """Why a finished command-line module run failed, or None when it completed."""
    if cli_node is None:
        return "it did not start"
    status = cli_node.GetStatus()
    if status & cli_node.ErrorsMask or status == cli_node.Cancelled:
        text = one_line(cli_node.GetErrorText() or "") or cli_node.GetStatusString()
        return text or "it ended with errors"
    if status != cli_node.Completed:
        return f"it ended as {cli_node.GetStatusString() or status}"
    return None


def _swiss_skull_stripper(backend: ExtensionBackend, reference: Any, modules: Any, cli: Any) -> Any:
    """Run the command-line module on ``reference``; returns its brain label-map node.

    The command-line module node is made here (``cli.createNode``) rather than by ``runSync``, so that it is
    held, and removed, also when the run raises.
    """
    scene = reference.GetScene()
    module = getattr(modules, backend.module.lower())
    masked = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{reference.GetName()} ({backend.title} output)")
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", _mask_name(backend, reference))
    parameters = dict(zip(SWISS_PARAMETERS, (reference.GetID(), masked.GetID(), label.GetID())))
    cli_node = None
    try:
        try:
            cli_node = cli.createNode(module, parameters)
            cli_node = cli.runSync(module, cli_node, parameters, update_display=False) or cli_node
        except Exception as error:  # slicer.cli.runSync raises on a failed run; say it in one line
            raise BrainExtractionError(f"{backend.title} could not extract the brain of {node_label(reference)}: "
                                       f"{one_line(str(error)) or type(error).__name__}") from None
        failure = _cli_failure(cli_node)
        if failure is not None:
            raise BrainExtractionError(f"{backend.title} could not extract the brain of {node_label(reference)}: "
                                       f"{failure}")
    except BaseException:
        scene.RemoveNode(label)
        raise
    finally:
        scene.RemoveNode(masked)
        if cli_node is not None and cli_node.GetScene() is scene:
            scene.RemoveNode(cli_node)
    return label


def needs_consent(key: str, import_module: Callable = importlib.import_module) -> bool:
    """Whether running the extension ``key`` may download or install something the user has not agreed to:
    HD Brain Extraction without the HD-BET package it fetches on first use."""
    if key != "hd-brain-extraction":
        return False
    try:
        import_module("HD_BET")
    except ImportError:
        return True
    return False


def _hd_brain_extraction(backend: ExtensionBackend, reference: Any, import_module: Callable, device: str) -> Any:
    """Run the scripted module's logic on ``reference``; returns its brain segmentation node."""
    scene = reference.GetScene()
    try:
        logic = getattr(import_module(backend.module), f"{backend.module}Logic")()
        logic.setupPythonRequirements()  # the panel asked first when this may download (needs_consent)
    except Exception as error:
        raise BrainExtractionError(f"{backend.title} is not ready: {one_line(str(error)) or type(error).__name__}; "
                                   "or select a brain mask") from None
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", _mask_name(backend, reference))
    try:
        try:
            logic.process(reference, None, segmentation, "cpu" if device == "cpu" else "auto")
        except Exception as error:
            reason = one_line(str(error)) or type(error).__name__
            offline = needed_the_network(reason)
            raise BrainExtractionError(f"{backend.title} could not extract the brain of {node_label(reference)}: "
                                       f"{reason}" + (" (offline, HD-BET cannot fetch its weights; select a brain "
                                                      "mask instead)" if offline else "")) from None
    except BaseException:
        scene.RemoveNode(segmentation)
        raise
    return segmentation


def extension_brain_mask(key: str, reference: Any, *, modules: Any, cli: Any = None,
                         import_module: Callable = importlib.import_module, device: str = "auto") -> Any:
    """The brain mask of ``reference`` (a volume node) made by the extension ``key``: a new label-map or
    segmentation node, beside the volume in the subject hierarchy, checked like any brain mask.

    Raises :class:`~MRISynthesisLib.clinical.brain_masks.BrainExtractionError` (one line naming the tool and
    the volume) when the extension is not installed, fails, or makes a mask that is not a brain's; then
    nothing it made is left in the scene.
    """
    backend = EXTENSION_BACKENDS.get(key)
    if backend is None:
        raise BrainExtractionError(f"brain extraction {key!r}: expected one of {', '.join(EXTENSION_BACKENDS)}")
    if reference is None or reference.GetScene() is None:
        raise MRMLInputError(f"{backend.title}: the reference volume is not in the scene")
    if not backend.installed(modules):
        raise BrainExtractionError(f"{backend.title} is not installed: install the {backend.extension} extension "
                                   "(Extensions Manager) and restart Slicer, or select a brain mask")
    if backend.key == "swiss-skull-stripper":
        if cli is None:
            raise TypeError("cli (slicer.cli) is needed for a command-line module")
        node = _swiss_skull_stripper(backend, reference, modules, cli)
    else:
        node = _hd_brain_extraction(backend, reference, import_module, device)
    try:
        check_brain_mask(brain_mask_from_node(node), f"the {backend.title} mask of {node_label(reference)}")
    except (BrainExtractionError, MRMLInputError):
        node.GetScene().RemoveNode(node)
        raise
    _place_beside(node, reference)
    return node
