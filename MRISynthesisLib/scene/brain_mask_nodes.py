"""A brain mask from the scene for preparing a study: a label-map volume node or a segmentation node.

The module's *Prepare inputs* takes the user's brain mask from either kind of node (a
segmentation is exported to a label map first, as Slicer's own export does). Any non-zero
label counts as brain. The mask keeps its own geometry; preparation resamples it onto the
reference series' grid.
"""
from __future__ import annotations

from typing import Any

import SimpleITK as sitk

import slicer

from .geometry import image_from_volume_node
from .nodes import MRMLInputError, node_label

__all__ = ["brain_mask_from_node"]


def _segmentation_as_label_map(node: Any) -> Any:
    """A temporary label-map node holding the segmentation's segments (removed by the caller)."""
    scene = node.GetScene()
    label_map = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.ExportAllSegmentsToLabelmapNode(node, label_map, 0):
        scene.RemoveNode(label_map)
        raise MRMLInputError(f"{node_label(node)}: the segmentation could not be exported as a label map")
    return label_map


def brain_mask_from_node(node: Any) -> sitk.Image:
    """The brain mask a label-map or segmentation node holds, as a 0/1 UInt8 image in its physical space."""
    if node is None or not hasattr(node, "IsA"):
        raise TypeError(f"brain mask must be a label-map or segmentation node, got {type(node).__name__}")
    if node.IsA("vtkMRMLSegmentationNode"):
        if node.GetSegmentation() is None or node.GetSegmentation().GetNumberOfSegments() == 0:
            raise MRMLInputError(f"{node_label(node)}: the segmentation has no segments")
        label_map = _segmentation_as_label_map(node)
        try:
            image = image_from_volume_node(label_map)
        finally:
            label_map.GetScene().RemoveNode(label_map)
    elif node.IsA("vtkMRMLLabelMapVolumeNode"):
        image = image_from_volume_node(node)
    else:
        raise MRMLInputError(f"{node_label(node)}: a brain mask is a label map or a segmentation, not a "
                             f"{node.GetClassName()}")
    return sitk.Cast(sitk.NotEqual(image, 0), sitk.sitkUInt8)
