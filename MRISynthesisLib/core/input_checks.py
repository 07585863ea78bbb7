"""Checks on an input image's voxels before a model sees them, and on the set of inputs.

A z-scored volume would lose every negative voxel to the model's [0, 1] scaling, a label map
or mask is not an MR image, a synthetic volume of this tool fed back as "acquired" makes a
synthesis of a synthesis, and one scan given for two sequences makes the report claim inputs
the case does not have. Each is refused with one line naming the input. (Checks on files
before their voxels are read live in :mod:`file_checks`.)
"""
from __future__ import annotations

from typing import Hashable, Mapping, Optional, Tuple

import numpy as np
import SimpleITK as sitk

__all__ = [
    "InputError", "NEGATIVE_FRACTION_LIMIT", "MAX_LABEL_VALUES", "DUPLICATE_CORRELATION",
    "check_voxel_values", "check_acquired", "is_synthetic", "find_duplicate",
]

#: Share of non-zero voxels that may be negative. MR magnitudes are >= 0; interpolation ringing
#: leaves well under 0.1 %; a z-scored brain has about half of them negative.
NEGATIVE_FRACTION_LIMIT = 0.01
#: An image with at most this many distinct values is a label map or a mask, not an MR image
#: (BraTS labels have 4; even an 8-bit MR image has over 100 distinct values in a brain).
MAX_LABEL_VALUES = 16
#: Whole-number images whose neighbouring voxels are equal this often are label maps (a noisy
#: 12-bit MR image repeats a neighbour's value in a few percent of places, a parcellation in ~95 %).
PIECEWISE_CONSTANT_SHARE = 0.8
#: Non-zero voxels whose standard deviation is below this fraction of their mean are a mask
#: (brain tissue in any MR sequence varies by tens of percent).
MIN_INTENSITY_SPREAD = 0.02
#: Two inputs whose voxels correlate above this (on one grid) are one scan given twice: repeated
#: acquisitions of one sequence stay below 0.99 through noise alone, other sequences far below.
DUPLICATE_CORRELATION = 0.999
#: Header description this tool writes into every synthetic volume (see ``outputs.description_for``).
SYNTHETIC_MARK = "SYNTHETIC"
#: Image metadata that may carry that mark: NIfTI/NRRD descriptions and the DICOM Series Description.
SYNTHETIC_MARK_KEYS = ("descrip", "ITK_FileNotes", "0008|103e")

#: Voxels sampled to decide quickly that an image has many distinct values.
_SAMPLE_VOXELS = 200_000


class InputError(ValueError):
    """Bad input: the message is one line that names the file or image and the problem."""


# --------------------------------------------------------------------------- voxels


def check_voxel_values(array: np.ndarray, name: str) -> None:
    """MR magnitudes: some positive voxel, and (nearly) no negative ones.

    The model scales each volume from 0 to its brain's 99.5th percentile; a z-scored or
    otherwise signed volume would lose every negative voxel to black, so it is refused.
    """
    positive = int(np.count_nonzero(array > 0))
    negative = int(np.count_nonzero(array < 0))
    if positive == 0:
        raise InputError(f"{name}: no positive voxel (MR magnitude images are non-negative; is it z-scored "
                         "or inverted?)")
    if negative > NEGATIVE_FRACTION_LIMIT * (positive + negative):
        share = 100.0 * negative / (positive + negative)
        raise InputError(f"{name}: {share:.0f}% of its non-zero voxels are negative (minimum "
                         f"{float(array.min()):.3g}); it looks z-scored or otherwise normalised: give the "
                         "scanner's magnitude image, the model normalises it itself")
    check_not_label_map(array, name)


def check_not_label_map(array: np.ndarray, name: str) -> None:
    """Refuse a label map or a mask given as an MR image.

    Three signs, each impossible for a magnitude image with noise: a handful of distinct values
    (BraTS labels, a binary mask); whole-number values that stay equal between neighbours almost
    everywhere (a parcellation with dozens of labels); or almost no spread inside the non-zero
    region (a mask times a little noise).
    """
    step = max(1, array.size // _SAMPLE_VOXELS)
    if np.unique(array.ravel()[::step]).size <= MAX_LABEL_VALUES:
        values = np.unique(array)
        if values.size <= MAX_LABEL_VALUES:
            shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
            raise InputError(f"{name}: holds only {values.size} distinct values ({shown}): a label map or a mask, "
                             "not an MR image")
    inside = array != 0
    values = array[inside]
    if values.size < 2:
        return
    if np.all(np.mod(values[:: max(1, values.size // _SAMPLE_VOXELS)], 1) == 0):
        same = np.count_nonzero((array[:, :, 1:] == array[:, :, :-1]) & inside[:, :, 1:])
        share = same / max(1, np.count_nonzero(inside[:, :, 1:]))
        if share > PIECEWISE_CONSTANT_SHARE:
            raise InputError(f"{name}: {100 * share:.0f}% of its neighbouring voxels hold the same whole number: "
                             "a label map, not an MR image")
    spread = float(np.std(values) / abs(np.mean(values))) if np.mean(values) else 1.0
    if spread < MIN_INTENSITY_SPREAD:
        raise InputError(f"{name}: its non-zero voxels are almost constant (spread {100 * spread:.1f}% of their "
                         "mean): a mask, not an MR image")


def is_synthetic(image: sitk.Image) -> bool:
    """True when the image's description (NIfTI/NRRD header, DICOM Series Description) says SYNTHETIC."""
    return bool(synthetic_mark(image))


def synthetic_mark(image: sitk.Image) -> str:
    """The description that marks ``image`` as synthetic, or '' when none does."""
    for key in SYNTHETIC_MARK_KEYS:
        if image.HasMetaDataKey(key):
            text = image.GetMetaData(key).strip()
            if text.upper().startswith(SYNTHETIC_MARK):
                return text
    return ""


def check_acquired(image: sitk.Image, name: str) -> None:
    """Refuse a synthetic volume of this tool given as an acquired input (a synthesis of a synthesis)."""
    mark = synthetic_mark(image)
    if mark:
        raise InputError(f"{name}: is a synthetic volume ('{mark}'), not an acquired scan; "
                         "synthesis uses acquired inputs only")


#: Voxel offsets under which two inputs are compared: a copy moved by one voxel is the same scan.
_SHIFTS = ((0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
#: Voxels sampled per comparison (the correlations settle long before this many).
_DUPLICATE_SAMPLE = 50_000


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    scale = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / scale) if scale > 0 else 0.0


def _same_scan(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``b`` is ``a`` up to a monotone intensity map (scaling, inversion, a square root)
    and a shift of at most one voxel: |Pearson| or |Spearman| above :data:`DUPLICATE_CORRELATION`
    on a sample of the voxels where either is non-zero."""
    from scipy.stats import rankdata

    index = np.flatnonzero((a != 0) | (b != 0))
    if index.size < 2:
        return False
    sample = index[:: max(1, index.size // _DUPLICATE_SAMPLE)]
    coords = np.unravel_index(sample, a.shape)
    x = a.ravel()[sample].astype(np.float64)
    x_ranks = rankdata(x)
    for shift in _SHIFTS:
        moved = tuple(np.clip(c + d, 0, n - 1) for c, d, n in zip(coords, shift, a.shape))
        y = np.asarray(b[moved], dtype=np.float64)
        if (abs(_pearson(x, y)) > DUPLICATE_CORRELATION
                or abs(_pearson(x_ranks, rankdata(y))) > DUPLICATE_CORRELATION):
            return True
    return False


def _on_grid(image: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """``image``'s voxels on ``reference``'s grid (resampled in physical space when the grids differ)."""
    same = (image.GetSize() == reference.GetSize()
            and np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-3)
            and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-2)
            and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4))
    if same:
        return sitk.GetArrayViewFromImage(image)
    resampled = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(resampled)  # a copy: a view would outlive the temporary image


def find_duplicate(images: Mapping[Hashable, sitk.Image]) -> Optional[Tuple[Hashable, Hashable]]:
    """The first two keys whose images are one scan: the same voxels up to a monotone intensity
    map (scaling, inversion, a square root), a one-voxel shift, small geometry changes,
    reorientation or resampling (see :func:`_same_scan`, once on one grid); None when all differ.

    The same scan given for two sequences would make the report claim inputs the case does not
    have, and a copy re-saved with another voxel order or scale is the same scan.
    """
    keys = list(images)
    for index, first in enumerate(keys):
        reference = sitk.GetArrayViewFromImage(images[first])
        for second in keys[index + 1:]:
            if _same_scan(reference, _on_grid(images[second], images[first])):
                return first, second
    return None
