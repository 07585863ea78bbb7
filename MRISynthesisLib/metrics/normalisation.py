"""Percentile scalings that map a volume to [0, 1] before images are compared: inside the brain
(this project's evaluation) or over the whole volume (BraSyn's)."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .checks import MetricsError, as_float_volume, non_empty_mask

__all__ = ["normalise_for_metrics", "normalise_whole_volume"]


def normalise_for_metrics(
    volume: np.ndarray,
    brain_mask: np.ndarray,
    percentiles: Tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Map ``volume`` to [0, 1] the way synthesis evaluation compares images (float32).

    The brain's ``percentiles`` (low, high) of ``volume`` are found, brain voxels are clipped to
    them and scaled linearly so that low -> 0 and high -> 1; voxels outside ``brain_mask`` are 0.
    A volume constant inside the brain maps to all zeros. Evaluation applies this to the
    acquired and to the synthetic image, each with its own percentiles, so that a global
    intensity scale or offset of the synthesis does not count as an error. BraSyn's evaluation
    script likewise normalises each image by its own 0.5/99.5 percentiles, but takes them over
    the whole volume (background included) with the lower bound kept at or above 0.
    """
    data = as_float_volume("volume", volume)
    brain = non_empty_mask("brain_mask", brain_mask, data.shape)
    brain_values = data[brain]
    normalised = np.zeros(data.shape, dtype=np.float32)
    normalised[brain] = _scale_between_percentiles(brain_values, percentiles)
    return normalised


def normalise_whole_volume(volume: np.ndarray, percentiles: Tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Map ``volume`` to [0, 1] by its own percentiles over every voxel, background included (float32).

    The scaling BraSyn's evaluation uses: the low percentile is kept at or above 0 (so the
    background of a skull-stripped volume stays 0), values are clipped to [low, high] and
    scaled linearly. A constant volume maps to all zeros.
    """
    return _scale_between_percentiles(as_float_volume("volume", volume), percentiles, floor=0.0)


def _scale_between_percentiles(values: np.ndarray, percentiles: Tuple[float, float],
                               floor: Optional[float] = None) -> np.ndarray:
    """``values`` clipped to their (low, high) ``percentiles`` and mapped linearly to [0, 1] (float32).

    ``floor`` keeps the low bound at or above it. Constant values map to zeros.
    """
    low_pct, high_pct = (float(p) for p in percentiles)
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise MetricsError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    low, high = np.percentile(values, [low_pct, high_pct])  # float64 scalars: the scaling runs in float64
    if floor is not None:
        low = np.float64(max(low, floor))
    if not high > low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((np.clip(values, low, high) - low) / (high - low)).astype(np.float32)
