"""Tumour segmentation scores of the BraTS regions: the regions of a label map, Dice and HD95.

torch and MONAI are imported only when Dice or HD95 has two non-empty masks to compare, so
importing this module stays cheap.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Sequence, Tuple

import numpy as np

from .checks import MetricsError, as_mask

__all__ = [
    "BRATS_HD95_PENALTY",
    "BRATS_LABELS",
    "BRATS_REGIONS",
    "brats_regions",
    "dice",
    "hd95",
    "segmentation_metrics",
]

#: HD95 (mm) given when exactly one of prediction and truth is empty: the BraTS 2023
#: penalty, the diagonal of the 240 x 240 x 155 mm BraTS volume, sqrt(240^2+240^2+155^2).
BRATS_HD95_PENALTY = 373.1287

#: BraTS 2023 labels: 1 necrotic tumour core, 2 peritumoral oedema, 3 enhancing tumour.
BRATS_LABELS = (0, 1, 2, 3)
#: The evaluated regions and the labels each one is made of.
BRATS_REGIONS: Dict[str, Tuple[int, ...]] = {
    "WT": (1, 2, 3),  # whole tumour
    "TC": (1, 3),  # tumour core
    "ET": (3,),  # enhancing tumour
}


def brats_regions(label: np.ndarray) -> Dict[str, np.ndarray]:
    """Boolean masks of the BraTS regions from a BraTS 2023 label map.

    Labels: 0 background, 1 necrotic core, 2 oedema, 3 enhancing tumour. Regions:
    WT = 1|2|3, TC = 1|3, ET = 3. BraTS 2021 maps (enhancing = 4) must be converted first.
    """
    label_array = np.asarray(label)
    if not (np.issubdtype(label_array.dtype, np.integer) or np.issubdtype(label_array.dtype, np.floating)):
        raise MetricsError(f"label: expected an integer label map, got dtype {label_array.dtype}")
    known = np.isin(label_array, BRATS_LABELS)
    if not known.all():
        unknown = np.unique(label_array[~known]).tolist()
        hint = " (label 4 is the BraTS 2021 enhancing label: map it to 3)" if 4 in unknown else ""
        raise MetricsError(f"label: values {unknown} are not BraTS 2023 labels 0-3{hint}")
    return {name: np.isin(label_array, labels) for name, labels in BRATS_REGIONS.items()}


def _binary_pair(pred_mask: np.ndarray, true_mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Validate a prediction/truth pair of binary masks and return them as booleans."""
    truth = np.asarray(true_mask)
    if truth.ndim == 0:
        raise MetricsError("true_mask: expected an array, got a scalar")
    truth = truth if truth.dtype == bool else truth != 0
    return as_mask("pred_mask", pred_mask, truth.shape), truth


def _crop_to_union(pred: np.ndarray, truth: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Crop both masks to their union's bounding box plus one voxel (inside the array).

    Dice and surface distances do not change (MONAI crops the same way before finding
    edges), but the tensors handed to MONAI become far smaller than a whole BraTS volume.
    """
    union = pred | truth
    box = []
    for axis in range(union.ndim):
        other_axes = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other_axes))
        box.append(slice(max(int(hits[0]) - 1, 0), int(hits[-1]) + 2))
    return pred[tuple(box)], truth[tuple(box)]


def _one_hot_tensor(mask: np.ndarray):  # -> torch.Tensor
    """A binary mask as the (batch, channel, *spatial) float tensor MONAI's metrics expect."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def dice(pred_mask: np.ndarray, true_mask: np.ndarray) -> float:
    """Dice overlap ``2|P & T| / (|P| + |T|)``, computed by MONAI's ``compute_dice``.

    BraTS convention for empty masks: both empty -> 1.0; exactly one empty -> 0.0.
    """
    pred, truth = _binary_pair(pred_mask, true_mask)
    pred_any, truth_any = bool(pred.any()), bool(truth.any())
    if not pred_any and not truth_any:
        return 1.0
    if pred_any != truth_any:
        return 0.0
    from monai.metrics import compute_dice

    pred, truth = _crop_to_union(pred, truth)
    score = compute_dice(
        _one_hot_tensor(pred), _one_hot_tensor(truth), include_background=True, ignore_empty=False
    )
    return float(score.reshape(-1)[0])


def _check_spacing(spacing: Sequence[float], ndim: int) -> Tuple[float, ...]:
    """Validate voxel spacing: one positive value per array axis."""
    values = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)))
    if len(values) != ndim or not all(s > 0 and math.isfinite(s) for s in values):
        raise MetricsError(
            f"spacing must hold {ndim} positive values in array axis order, got {tuple(spacing)}"
        )
    return values


def hd95(pred_mask: np.ndarray, true_mask: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance between mask surfaces, in spacing units (mm).

    Computed by MONAI's ``compute_hausdorff_distance(percentile=95)``: the 95th percentile of the
    distances from each surface voxel of one mask to the other mask's surface, taken in both
    directions, and the larger of the two. ``spacing`` is given in the ARRAY axis order, which
    for SimpleITK arrays (z, y, x) is ``image.GetSpacing()[::-1]``.

    BraTS convention for empty masks: both empty -> 0.0; exactly one empty ->
    :data:`BRATS_HD95_PENALTY` (373.1287 mm, the BraTS 2023 penalty).
    """
    pred, truth = _binary_pair(pred_mask, true_mask)
    voxel_spacing = _check_spacing(spacing, truth.ndim)
    pred_any, truth_any = bool(pred.any()), bool(truth.any())
    if not pred_any and not truth_any:
        return 0.0
    if pred_any != truth_any:
        return BRATS_HD95_PENALTY
    from monai.metrics import compute_hausdorff_distance

    pred, truth = _crop_to_union(pred, truth)
    with warnings.catch_warnings():
        # MONAI 1.5+ passes its own deprecated argument to get_mask_edges; nothing to act on here.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        distance = compute_hausdorff_distance(
            _one_hot_tensor(pred),
            _one_hot_tensor(truth),
            include_background=True,
            percentile=95,
            spacing=list(voxel_spacing),
        )
    return float(distance.reshape(-1)[0])


def segmentation_metrics(
    pred_label: np.ndarray, true_label: np.ndarray, spacing: Sequence[float]
) -> Dict[str, float]:
    """Dice and HD95 of the BraTS regions: keys ``dice_WT dice_TC dice_ET hd95_WT hd95_TC hd95_ET``.

    ``spacing`` is in array axis order (see :func:`hd95`).
    """
    predicted = brats_regions(pred_label)
    truth = brats_regions(true_label)
    if predicted["WT"].shape != truth["WT"].shape:
        raise MetricsError(
            f"pred_label and true_label have different shapes: {predicted['WT'].shape} vs {truth['WT'].shape}"
        )
    scores: Dict[str, float] = {}
    for region in BRATS_REGIONS:
        scores[f"dice_{region}"] = dice(predicted[region], truth[region])
    for region in BRATS_REGIONS:
        scores[f"hd95_{region}"] = hd95(predicted[region], truth[region], spacing)
    return scores
