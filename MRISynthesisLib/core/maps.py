"""Difference maps that let a radiologist check a synthetic volume.

* refinement map: final minus stage 1, signed - what the 3D Refiner changed;
* tumour-region map: the refinement magnitude restricted to the tumour region (from the
  bundle's segmenter on the completed set, or, without one, the strongest 1 % of changes,
  cleaned) - in the spirit of TSF-Seq2Seq's task-specific enhanced map;
* error map: |synthetic - acquired| when the target was in fact acquired (validation).
All arrays share the model grid or the input grid of the caller; nothing here resamples.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Without a segmenter, the tumour region is where |refinement| exceeds this brain percentile.
FALLBACK_PERCENTILE = 99.0


def refinement_map(final: np.ndarray, stage1: np.ndarray) -> np.ndarray:
    """Signed change made by the refiner (same units as the volumes)."""
    return np.asarray(final, dtype=np.float32) - np.asarray(stage1, dtype=np.float32)


def fallback_tumour_region(refinement: np.ndarray, brain: np.ndarray,
                           percentile: float = FALLBACK_PERCENTILE, min_voxels: int = 20) -> np.ndarray:
    """Region of the strongest refinement: above the brain's ``percentile`` of |change|, cleaned.

    Cleaning (opening, then dropping components under ``min_voxels``) removes the scattered
    single voxels that any threshold of a noisy map picks up.
    """
    magnitude = np.abs(refinement)
    values = magnitude[brain]
    if values.size == 0 or float(values.max()) == 0.0:
        return np.zeros(brain.shape, dtype=bool)
    threshold = float(np.percentile(values, percentile))
    region = (magnitude > threshold) & brain
    region = ndimage.binary_opening(region, structure=ndimage.generate_binary_structure(3, 1))
    labels, count = ndimage.label(region)
    if count:
        sizes = np.bincount(labels.ravel())
        keep = np.flatnonzero(sizes >= min_voxels)
        keep = keep[keep != 0]
        region = np.isin(labels, keep)
    return region


def tumour_region_map(refinement: np.ndarray, region: np.ndarray) -> np.ndarray:
    """|refinement| inside ``region``, 0 elsewhere."""
    return np.where(region, np.abs(refinement), 0.0).astype(np.float32)


def error_map(synthetic: np.ndarray, acquired: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """|synthetic - acquired| inside the brain (both on one intensity scale), 0 outside."""
    difference = np.abs(np.asarray(synthetic, dtype=np.float32) - np.asarray(acquired, dtype=np.float32))
    return np.where(brain, difference, 0.0).astype(np.float32)
