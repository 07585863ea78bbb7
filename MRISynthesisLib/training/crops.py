"""3D crops for the segmenter and stage 2: the crop size, where a crop goes (a random centre on
brain or tumour, or a uniformly random position as the paper's stage 2), and the crop itself
(zero-padded where the volume is smaller than the crop).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence as SequenceT

import numpy as np

from .options import TrainingError

if TYPE_CHECKING:  # only a type here: prepared cases crop with take_crop
    from .prepared_cases import PreparedCase

__all__ = ["CROP_MODES", "check_crop_mode", "crop_size_for", "random_centre", "uniform_box", "crop_box",
           "take_crop"]

#: Stage-2 ``--crops``: ``uniform`` (any position of the crop in the volume alike, the paper's
#: "randomly cropped") or ``centred`` (on a random brain voxel, or a tumour voxel for
#: ``--tumour-fraction`` of the crops: this project's choice for short runs).
CROP_MODES = ("uniform", "centred")


def check_crop_mode(mode: str) -> None:
    """One-line :class:`TrainingError` unless ``mode`` is one of :data:`CROP_MODES`."""
    if mode not in CROP_MODES:
        raise TrainingError(f"--crops must be one of {', '.join(CROP_MODES)}, got {mode!r}")


def crop_size_for(requested: SequenceT[int], factor: int) -> tuple:
    """Check a crop size: three positive multiples of the network's downsampling factor."""
    size = tuple(int(v) for v in requested)
    if len(size) == 1:
        size = size * 3
    if len(size) != 3 or any(v <= 0 or v % factor for v in size):
        raise TrainingError(f"--crop-size {list(requested)} must be 1 or 3 positive multiples of {factor}")
    return size


def random_centre(case: PreparedCase, rng: np.random.Generator, tumour_fraction: float = 0.5) -> tuple:
    """A random voxel of the tumour (with probability ``tumour_fraction``, when there is one) or the brain."""
    use_tumour = rng.random() < tumour_fraction and case.bounding_box("tumour") is not None
    which = "tumour" if use_tumour else "brain"
    box = case.bounding_box(which)
    if box is None:
        return tuple(s // 2 for s in case.brain.shape)
    mask = (case.label > 0) if use_tumour else case.brain
    for _ in range(1000):  # rejection sampling inside the bounding box; masks fill a good part of it
        point = tuple(int(rng.integers(sl.start, sl.stop)) for sl in box)
        if mask[point]:
            return point
    return tuple((sl.start + sl.stop) // 2 for sl in box)


def uniform_box(shape: SequenceT[int], size: SequenceT[int], rng: np.random.Generator) -> tuple:
    """Slices of a ``size`` crop whose start is uniform over every position where it fits (0 where
    the volume is smaller than the crop: :func:`take_crop` pads it)."""
    box = []
    for dim, length in zip(shape, size):
        start = int(rng.integers(0, max(int(dim) - int(length), 0) + 1))
        box.append(slice(start, min(start + int(length), int(dim))))
    return tuple(box)


def crop_box(shape: SequenceT[int], size: SequenceT[int], centre: SequenceT[int]) -> tuple:
    """Slices of a ``size`` crop around ``centre``, kept inside the volume where it fits."""
    box = []
    for dim, length, middle in zip(shape, size, centre):
        start = min(max(int(middle) - length // 2, 0), max(dim - length, 0))
        box.append(slice(start, min(start + length, dim)))
    return tuple(box)


def take_crop(array: np.ndarray, box: tuple, size: SequenceT[int], fill: float = 0.0) -> np.ndarray:
    """``array[..., box]`` zero-padded at the end of each axis up to ``size`` (volumes smaller than the crop)."""
    cropped = np.asarray(array[(Ellipsis,) + tuple(box)])
    lead = cropped.ndim - len(size)
    pad = [(0, 0)] * lead + [(0, s - c) for s, c in zip(size, cropped.shape[lead:])]
    if any(after for _, after in pad):
        cropped = np.pad(cropped, pad, mode="constant", constant_values=fill)
    return np.ascontiguousarray(cropped)
