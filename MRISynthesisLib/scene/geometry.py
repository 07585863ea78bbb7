"""Volume nodes <-> SimpleITK images: the IJK-to-RAS matrix against SimpleITK's LPS geometry, and copies
of voxels both ways.

MRML stores a volume's IJK-to-RAS matrix, SimpleITK stores origin, spacing and direction in
LPS. The conversion between the two happens here and nowhere else
(:func:`ijk_to_ras_from_image`, :func:`image_geometry_from_ijk_to_ras`). Copies never share
voxels with a node.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

import slicer.util

from .nodes import MRMLInputError, node_label

__all__ = [
    "ijk_to_ras_from_image",
    "image_geometry_from_ijk_to_ras",
    "world_ijk_to_ras",
    "image_from_volume_node",
    "update_volume_node_from_image",
    "volume_node_from_image",
]

#: LPS (SimpleITK, DICOM) and RAS (Slicer) differ by the sign of the first two axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


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


def world_ijk_to_ras(node: Any) -> np.ndarray:
    """The node's IJK-to-RAS matrix in world coordinates (a linear parent transform included)."""
    local = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(local)
    matrix = slicer.util.arrayFromVTKMatrix(local)
    transform = node.GetParentTransformNode()
    if transform is None:
        return matrix
    if not transform.IsTransformToWorldLinear():
        raise MRMLInputError(
            f"{node_label(node)}: is under a non-linear transform ({node_label(transform)}); harden it first"
        )
    to_world = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(to_world)
    return slicer.util.arrayFromVTKMatrix(to_world) @ matrix


def _checked_world_matrix(node: Any, name: str) -> np.ndarray:
    """The node's world IJK-to-RAS matrix, refused (naming the node) when it is not a usable grid:
    non-finite, a zero-length or repeated axis (zero spacing, flattened by a transform)."""
    from ..core.file_checks import check_axes, check_geometry
    from ..core.input_checks import InputError

    matrix = world_ijk_to_ras(node)
    try:
        check_axes(name, matrix[:3, :3], "IJK-to-RAS matrix")
        if not np.all(np.isfinite(matrix)):
            raise InputError(f"{name}: IJK-to-RAS matrix holds a NaN or infinite value")
        check_geometry(name, np.linalg.norm(matrix[:3, :3], axis=0), matrix[:3, 3], np.eye(3).ravel())
    except InputError as error:
        raise MRMLInputError(f"{error} (degenerate geometry)") from None
    return matrix


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
    spacing, origin, direction = image_geometry_from_ijk_to_ras(_checked_world_matrix(node, name))
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
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras_from_image(image)))
    node.SetAndObserveImageData(_image_data_from_image(image))
    return node


def volume_node_from_image(scene: Any, image: sitk.Image, name: str,
                           class_name: str = "vtkMRMLScalarVolumeNode") -> Any:
    """Add a new volume node (with display node) holding a copy of ``image``; the name is made unique."""
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    update_volume_node_from_image(node, image)
    node.CreateDefaultDisplayNodes()
    return node
