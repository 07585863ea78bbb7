"""The BraTS-like space a prepared study is synthesised in (1 mm, axial), and the way back to native grids.

The model space is a 1 mm isotropic grid with axial slices (the patient's LPS axes, as BraTS
images are) that covers the brain mask with a margin, in the *reference series'* physical
frame: the reference maps onto it by resampling alone, every other series through its
co-registration transform. Results made there go back to the reference series' own grid
(and, on request, to every input's own grid) with the inverse mappings.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import SimpleITK as sitk

__all__ = ["MODEL_SPACING_MM", "MODEL_MARGIN_MM", "model_space_grid", "into_grid"]

#: Voxel size of the model space, as BraTS data.
MODEL_SPACING_MM = 1.0
#: Room around the brain mask's box (the stage-1 model crops to the brain itself).
MODEL_MARGIN_MM = 8.0


def model_space_grid(brain_mask: sitk.Image, spacing: float = MODEL_SPACING_MM,
                     margin_mm: float = MODEL_MARGIN_MM) -> sitk.Image:
    """An empty float image: 1 mm axial grid (identity direction) around the mask's physical bounding box."""
    array = sitk.GetArrayViewFromImage(brain_mask)
    indices = np.argwhere(array > 0)
    if indices.size == 0:
        raise ValueError("model_space_grid needs a non-empty brain mask")
    low, high = indices.min(axis=0)[::-1], indices.max(axis=0)[::-1]  # x, y, z order
    bounds = list(zip(low - 0.5, high + 0.5))  # the voxels' outer faces along x, y, z
    corners = [brain_mask.TransformContinuousIndexToPhysicalPoint([float(bounds[axis][pick]) for axis, pick in
                                                                   enumerate((i, j, k))])
               for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    points = np.array(corners)
    start = points.min(axis=0) - margin_mm
    stop = points.max(axis=0) + margin_mm
    size = [max(2, int(math.ceil((b - a) / spacing))) for a, b in zip(start, stop)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing((spacing,) * 3)
    grid.SetOrigin(tuple(float(v) for v in start + spacing / 2.0))
    grid.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return grid


def into_grid(image: sitk.Image, grid: sitk.Image, transform: Optional[sitk.Transform] = None,
              nearest: bool = False) -> sitk.Image:
    """``image`` resampled onto ``grid``: ``transform`` maps grid points to ``image`` points (SimpleITK's
    convention; identity when None). Linear (nearest neighbour for masks and labels), 0 outside, float32
    (the mask type kept for nearest)."""
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    pixel = image.GetPixelID() if nearest else sitk.sitkFloat32
    source = image if nearest else sitk.Cast(image, sitk.sitkFloat32)
    return sitk.Resample(source, grid, transform or sitk.Transform(), interpolator, 0.0, pixel)
