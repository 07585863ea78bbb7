"""What every preparation step needs of an image it is given: the check that it is a finite, non-constant scalar
3D volume, and its foreground (the head, or the brain of a skull-stripped image)."""
from __future__ import annotations

import math
from typing import Type

import SimpleITK as sitk

__all__ = ["float_volume", "foreground_mask"]


def foreground_mask(image: sitk.Image) -> sitk.Image:
    """Voxels above the Otsu threshold of ``image`` (uint8 0/1): the head, or the brain of a stripped image."""
    return sitk.OtsuThreshold(sitk.Cast(image, sitk.sitkFloat32), 0, 1, 128)


def float_volume(image: object, name: str, error: Type[Exception], min_voxels_per_axis: int = 1) -> sitk.Image:
    """``image`` as a float32 3D volume; otherwise ``error`` with one line starting with ``name``."""
    if not isinstance(image, sitk.Image):
        raise error(f"{name}: expected a SimpleITK image, got {type(image).__name__}")
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise error(f"{name}: expected a scalar 3-D volume, got size {image.GetSize()} with "
                    f"{image.GetNumberOfComponentsPerPixel()} components")
    if min(image.GetSize()) < min_voxels_per_axis:
        raise error(f"{name}: too thin (size {image.GetSize()}, at least {min_voxels_per_axis} voxels per axis "
                    "needed)")
    volume = sitk.Cast(image, sitk.sitkFloat32)
    stats = sitk.StatisticsImageFilter()
    stats.Execute(volume)
    if not math.isfinite(stats.GetSum()):
        raise error(f"{name}: contains NaN or infinite values")
    if stats.GetMaximum() <= stats.GetMinimum() or stats.GetMaximum() <= 0.0:
        raise error(f"{name}: the image is empty (every voxel is {stats.GetMinimum():g} or less)")
    return volume
