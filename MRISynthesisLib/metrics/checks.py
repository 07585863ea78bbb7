"""The input checks every metric shares: arrays, pairs, masks and data ranges, refused with a
:class:`MetricsError` that says what is wrong."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

__all__ = [
    "MetricsError",
    "as_float_volume",
    "check_same_shape",
    "as_mask",
    "non_empty_mask",
    "image_pair",
    "resolve_data_range",
    "select_voxels",
]


class MetricsError(ValueError):
    """An input to a metric is unusable (wrong shape, empty mask, zero data range...)."""


def as_float_volume(name: str, array: np.ndarray) -> np.ndarray:
    """Return ``array`` as a float32 numpy array, refusing empty or non-finite input."""
    volume = np.asarray(array, dtype=np.float32)
    if volume.size == 0:
        raise MetricsError(f"{name}: the array is empty (shape {volume.shape})")
    if not np.all(np.isfinite(volume)):
        raise MetricsError(f"{name}: the array contains NaN or infinite values")
    return volume


def check_same_shape(reference: np.ndarray, test: np.ndarray) -> None:
    """Refuse a reference/test pair whose shapes differ."""
    if reference.shape != test.shape:
        raise MetricsError(
            f"reference and test have different shapes: {reference.shape} vs {test.shape}"
        )


def as_mask(name: str, mask: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """Return ``mask`` as a boolean array of ``shape`` (non-zero voxels are True)."""
    mask_array = np.asarray(mask)
    if mask_array.shape != shape:
        raise MetricsError(f"{name}: shape {mask_array.shape} does not match the image shape {shape}")
    return mask_array if mask_array.dtype == bool else mask_array != 0


def non_empty_mask(name: str, mask: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """Like :func:`as_mask`, and refuse a mask without any True voxel."""
    mask_array = as_mask(name, mask, shape)
    if not mask_array.any():
        raise MetricsError(f"{name}: the mask is empty, there is nothing to compare")
    return mask_array


def image_pair(
    reference: np.ndarray, test: np.ndarray, mask: Optional[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Validate a reference/test pair and its optional mask; return them as arrays."""
    reference_volume = as_float_volume("reference", reference)
    test_volume = as_float_volume("test", test)
    check_same_shape(reference_volume, test_volume)
    mask_array = None if mask is None else non_empty_mask("mask", mask, reference_volume.shape)
    return reference_volume, test_volume, mask_array


def resolve_data_range(reference: np.ndarray, data_range: Optional[float]) -> float:
    """Return ``data_range``, or ``max - min`` of the whole reference when it is None."""
    if data_range is None:
        data_range = float(reference.max()) - float(reference.min())
        if data_range <= 0:
            raise MetricsError(
                "reference: the image is constant, so its data range (max - min) is 0; "
                "pass data_range explicitly"
            )
        return data_range
    data_range = float(data_range)
    if not data_range > 0 or not math.isfinite(data_range):
        raise MetricsError(f"data_range must be a positive finite number, got {data_range}")
    return data_range


def select_voxels(values: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    """The voxels of ``values`` inside ``mask`` (all of them when mask is None)."""
    return values if mask is None else values[mask]
