"""Metrics the synthesis is judged by: image similarity and BraTS tumour segmentation.

Image similarity (two-stage paper, Tables 1, 2 and 4; BraSyn challenge): SSIM, PSNR, NMSE,
MAE and MSE over the whole volume or restricted to a mask (tumour region, healthy region).
Segmentation (Tables 3 and 4): Dice and HD95 of the BraTS regions WT, TC and ET.

All inputs are numpy arrays in the same axis order (for SimpleITK images that is z, y, x,
as ``sitk.GetArrayFromImage`` gives). Masks are boolean arrays of the same shape; any other
dtype is read as ``mask != 0``. torch and MONAI are imported only by the segmentation
functions, so importing this module stays cheap.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from .names import IMAGE_METRICS, METRIC_TITLES, SEGMENTATION_METRICS  # noqa: F401 (the public table)

__all__ = [
    "MetricsError",
    "BRATS_HD95_PENALTY",
    "BRATS_REGIONS",
    "ssim_map",
    "ssim",
    "psnr",
    "nmse",
    "mae",
    "mse",
    "normalise_for_metrics",
    "normalise_whole_volume",
    "volume_ssim",
    "image_metrics",
    "enhancement_contrast",
    "brats_regions",
    "dice",
    "hd95",
    "segmentation_metrics",
]

#: SSIM stabilising constants of Wang et al. (2004): C1 = (K1 L)^2, C2 = (K2 L)^2.
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: Side of the uniform SSIM window (scikit-image's default ``win_size``).
UNIFORM_WINDOW_SIZE = 7

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


class MetricsError(ValueError):
    """An input to a metric is unusable (wrong shape, empty mask, zero data range...)."""


# --------------------------------------------------------------------------- input checks


def _as_float_volume(name: str, array: np.ndarray) -> np.ndarray:
    """Return ``array`` as a float32 numpy array, refusing empty or non-finite input."""
    volume = np.asarray(array, dtype=np.float32)
    if volume.size == 0:
        raise MetricsError(f"{name}: the array is empty (shape {volume.shape})")
    if not np.all(np.isfinite(volume)):
        raise MetricsError(f"{name}: the array contains NaN or infinite values")
    return volume


def _check_same_shape(reference: np.ndarray, test: np.ndarray) -> None:
    """Refuse a reference/test pair whose shapes differ."""
    if reference.shape != test.shape:
        raise MetricsError(
            f"reference and test have different shapes: {reference.shape} vs {test.shape}"
        )


def _as_mask(name: str, mask: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """Return ``mask`` as a boolean array of ``shape`` (non-zero voxels are True)."""
    mask_array = np.asarray(mask)
    if mask_array.shape != shape:
        raise MetricsError(f"{name}: shape {mask_array.shape} does not match the image shape {shape}")
    return mask_array if mask_array.dtype == bool else mask_array != 0


def _non_empty_mask(name: str, mask: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """Like :func:`_as_mask`, and refuse a mask without any True voxel."""
    mask_array = _as_mask(name, mask, shape)
    if not mask_array.any():
        raise MetricsError(f"{name}: the mask is empty, there is nothing to compare")
    return mask_array


def _image_pair(
    reference: np.ndarray, test: np.ndarray, mask: Optional[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Validate a reference/test pair and its optional mask; return them as arrays."""
    reference_volume = _as_float_volume("reference", reference)
    test_volume = _as_float_volume("test", test)
    _check_same_shape(reference_volume, test_volume)
    mask_array = None if mask is None else _non_empty_mask("mask", mask, reference_volume.shape)
    return reference_volume, test_volume, mask_array


def _resolve_data_range(reference: np.ndarray, data_range: Optional[float]) -> float:
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


def _select(values: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    """The voxels of ``values`` inside ``mask`` (all of them when mask is None)."""
    return values if mask is None else values[mask]


# --------------------------------------------------------------------------- SSIM


def _window(window: str, sigma: float, truncate: float) -> Tuple[Callable[[np.ndarray], np.ndarray], int]:
    """Local-averaging filter of the SSIM window and the window's width in voxels.

    The Gaussian window has radius ``int(truncate * sigma + 0.5)`` as in
    ``scipy.ndimage.gaussian_filter``; sigma 1.5 with truncate 3.5 gives the 11-tap window of
    Wang et al. Both filters reflect the image at its border, as scikit-image does.
    """
    if window == "gaussian":
        if not sigma > 0 or not truncate > 0:
            raise MetricsError(f"sigma and truncate must be positive, got sigma={sigma}, truncate={truncate}")
        radius = int(truncate * sigma + 0.5)

        def gaussian(volume: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(volume, sigma=sigma, truncate=truncate, mode="reflect")

        return gaussian, 2 * radius + 1
    if window == "uniform":

        def uniform(volume: np.ndarray) -> np.ndarray:
            return ndimage.uniform_filter(volume, size=UNIFORM_WINDOW_SIZE, mode="reflect")

        return uniform, UNIFORM_WINDOW_SIZE
    raise MetricsError(f"window must be 'gaussian' or 'uniform', got {window!r}")


def _ssim_from_scaled(
    x: np.ndarray, y: np.ndarray, local_mean: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """SSIM map of two images already divided by the data range (so L = 1)."""
    c1 = SSIM_K1**2
    c2 = SSIM_K2**2
    mu_x = local_mean(x)
    mu_y = local_mean(y)
    # Population (weighted) variances and covariance: E[xy] - E[x]E[y].
    var_x = local_mean(x * x)
    var_x -= mu_x * mu_x
    var_y = local_mean(y * y)
    var_y -= mu_y * mu_y
    cov_xy = local_mean(x * y)
    cov_xy -= mu_x * mu_y

    mu_xy = mu_x * mu_y
    numerator = 2 * mu_xy + c1
    numerator *= 2 * cov_xy + c2
    mu_x *= mu_x
    mu_y *= mu_y
    denominator = mu_x + mu_y + c1
    var_x += var_y
    var_x += c2
    denominator *= var_x
    numerator /= denominator
    return numerator


def ssim_map(
    reference: np.ndarray,
    test: np.ndarray,
    data_range: Optional[float] = None,
    sigma: float = 1.5,
    truncate: float = 3.5,
    window: str = "gaussian",
) -> np.ndarray:
    """Voxel-wise SSIM of ``test`` against ``reference`` (any number of dimensions), float32.

    Definition (Wang et al. 2004)::

        SSIM = (2 mu_x mu_y + C1)(2 cov_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2))

    with C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = ``data_range``, and local means, variances and the
    covariance taken over a window around each voxel: a Gaussian of ``sigma`` voxels cut at
    ``truncate`` sigmas (1.5 and 3.5 give Wang's 11-voxel window) or, with ``window="uniform"``,
    a 7-voxel box. Variances are population (weighted) moments, not sample ones. Images are
    reflected at their border. This is scikit-image's ``structural_similarity`` map with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` (or ``win_size=7,
    use_sample_covariance=False`` for the uniform window).

    ``data_range`` (L) defaults to ``reference.max() - reference.min()`` over the whole reference.
    Both images are divided by L first (SSIM is unchanged by that) and filtered in float32, which
    agrees with a float64 computation to about 1e-5 per voxel and 1e-6 in the mean.
    """
    reference_volume, test_volume, _ = _image_pair(reference, test, None)
    scale = 1.0 / _resolve_data_range(reference_volume, data_range)
    local_mean, _ = _window(window, sigma, truncate)
    x = reference_volume * np.float32(scale)
    y = test_volume * np.float32(scale)
    return _ssim_from_scaled(x, y, local_mean).astype(np.float32, copy=False)


def ssim(
    reference: np.ndarray,
    test: np.ndarray,
    mask: Optional[np.ndarray] = None,
    data_range: Optional[float] = None,
    window: str = "gaussian",
) -> float:
    """Mean SSIM of ``test`` against ``reference`` (see :func:`ssim_map` for the definition).

    Without ``mask`` the map is averaged after cropping the window's half-width from every
    side, as scikit-image's ``structural_similarity`` does, so the result equals it. With
    ``mask`` the map is computed on the whole volume (so the window sees the context around
    the region) and averaged over the voxels where the mask is True, uncropped; an all-True
    mask therefore differs slightly from no mask. ``data_range`` defaults to
    ``reference.max() - reference.min()`` over the whole reference, with or without mask.
    """
    reference_volume, test_volume, mask_array = _image_pair(reference, test, mask)
    _, window_size = _window(window, 1.5, 3.5)
    if mask_array is None and min(reference_volume.shape) < window_size:
        raise MetricsError(
            f"reference: shape {reference_volume.shape} is smaller than the {window_size}-voxel SSIM "
            "window in some dimension; pass a mask or use larger images"
        )
    values = ssim_map(reference_volume, test_volume, data_range=data_range, window=window)
    if mask_array is not None:
        return float(values[mask_array].mean(dtype=np.float64))
    half = (window_size - 1) // 2
    cropped = values[tuple(slice(half, size - half) for size in values.shape)]
    return float(cropped.mean(dtype=np.float64))


# --------------------------------------------------------------------------- error metrics


def mse(reference: np.ndarray, test: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Mean squared error over ``mask`` (all voxels when None)."""
    reference_volume, test_volume, mask_array = _image_pair(reference, test, mask)
    difference = _select(reference_volume, mask_array).astype(np.float64) - _select(test_volume, mask_array)
    return float(np.mean(difference * difference))


def mae(reference: np.ndarray, test: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Mean absolute error over ``mask`` (all voxels when None)."""
    reference_volume, test_volume, mask_array = _image_pair(reference, test, mask)
    difference = _select(reference_volume, mask_array).astype(np.float64) - _select(test_volume, mask_array)
    return float(np.mean(np.abs(difference)))


def nmse(reference: np.ndarray, test: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Normalised MSE: ``sum((reference - test)^2) / sum(reference^2)`` over ``mask``."""
    reference_volume, test_volume, mask_array = _image_pair(reference, test, mask)
    ref_values = _select(reference_volume, mask_array).astype(np.float64)
    energy = float(np.sum(ref_values * ref_values))
    if energy == 0:
        raise MetricsError("reference: all voxels (inside the mask) are 0, so NMSE is undefined")
    difference = ref_values - _select(test_volume, mask_array)
    return float(np.sum(difference * difference)) / energy


def psnr(
    reference: np.ndarray,
    test: np.ndarray,
    mask: Optional[np.ndarray] = None,
    data_range: Optional[float] = None,
) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(L^2 / MSE)`` with MSE over ``mask``.

    ``L`` is ``data_range``, by default ``reference.max() - reference.min()`` over the whole
    reference. Identical images give ``inf``.
    """
    reference_volume, _, _ = _image_pair(reference, test, mask)
    peak = _resolve_data_range(reference_volume, data_range)
    error = mse(reference, test, mask)
    if error == 0:
        return math.inf
    return 10.0 * math.log10(peak * peak / error)


# --------------------------------------------------------------------------- evaluation


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
    data = _as_float_volume("volume", volume)
    brain = _non_empty_mask("brain_mask", brain_mask, data.shape)
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
    return _scale_between_percentiles(_as_float_volume("volume", volume), percentiles, floor=0.0)


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


def volume_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM over the whole volume, background included, each image scaled by :func:`normalise_whole_volume`.

    The kind of number the two-stage paper reports as "SSIM-Whole" (Table 1, scored as BraSyn
    does: whole volume, whole-volume percentile scaling), with this module's Gaussian-window
    SSIM. It is far more lenient than the brain-only ``ssim`` of :func:`image_metrics`: the
    background, most of a BraTS volume, scores 1.
    """
    reference_volume, test_volume, _ = _image_pair(reference, test, None)
    return ssim(normalise_whole_volume(reference_volume), normalise_whole_volume(test_volume), data_range=1.0)


def image_metrics(
    reference: np.ndarray,
    test: np.ndarray,
    brain_mask: np.ndarray,
    tumour_mask: Optional[np.ndarray] = None,
    whole_volume: bool = True,
) -> Dict[str, float]:
    """Whole-brain, tumour and healthy-region similarity of a synthetic image to the acquired one.

    Both images are first mapped to [0, 1] by :func:`normalise_for_metrics` (each with its own
    brain percentiles); every metric then uses data_range = 1.0. Keys:

    - ``ssim``: SSIM map averaged over the brain mask;
    - ``ssim_tumour``: averaged over tumour & brain; ``ssim_healthy``: over brain minus tumour;
    - ``psnr``, ``nmse``, ``mae``: over the brain mask;
    - ``ssim_volume``: :func:`volume_ssim`, the paper's whole-volume SSIM (background included);
      left out with ``whole_volume=False`` (a second SSIM map: training validation does not use it).

    Region metrics are NaN when the region is empty (no tumour mask, an empty one, or a
    tumour covering the whole brain).
    """
    reference_volume, test_volume, _ = _image_pair(reference, test, None)
    brain = _non_empty_mask("brain_mask", brain_mask, reference_volume.shape)
    reference_01 = normalise_for_metrics(reference_volume, brain)
    test_01 = normalise_for_metrics(test_volume, brain)
    values = ssim_map(reference_01, test_01, data_range=1.0)

    tumour = np.zeros_like(brain)
    if tumour_mask is not None:
        tumour = _as_mask("tumour_mask", tumour_mask, brain.shape) & brain
    healthy = brain & ~tumour

    def region_mean(region: np.ndarray) -> float:
        return float(values[region].mean(dtype=np.float64)) if region.any() else math.nan

    scores = {
        "ssim": region_mean(brain),
        "ssim_tumour": region_mean(tumour),
        "ssim_healthy": region_mean(healthy),
        "psnr": psnr(reference_01, test_01, brain, data_range=1.0),
        "nmse": nmse(reference_01, test_01, brain),
        "mae": mae(reference_01, test_01, brain),
    }
    if whole_volume:
        scores["ssim_volume"] = volume_ssim(reference_volume, test_volume)
    return scores


def enhancement_contrast(image: np.ndarray, label: np.ndarray, brain_mask: np.ndarray) -> float:
    """Mean of ``image`` over the enhancing tumour divided by its median over healthy brain.

    Whether a (synthetic) T1c shows contrast enhancement at all, which SSIM hides: the
    enhancing tumour is a few percent of the brain. Acquired phantom T1c scores 2-3, an
    image without enhancement about 1. ``label``: BraTS 2023 labels. NaN without enhancing
    tumour or healthy brain, or when the healthy median is not positive.
    """
    volume = _as_float_volume("image", image)
    brain = _as_mask("brain_mask", brain_mask, volume.shape)
    regions = brats_regions(label)
    if regions["ET"].shape != volume.shape:
        raise MetricsError(f"label: shape {regions['ET'].shape} does not match the image shape {volume.shape}")
    enhancing = regions["ET"] & brain
    healthy = brain & ~regions["WT"]
    if not enhancing.any() or not healthy.any():
        return float("nan")
    healthy_median = float(np.median(volume[healthy]))
    return float(np.mean(volume[enhancing], dtype=np.float64) / healthy_median) if healthy_median > 0 else float("nan")


# --------------------------------------------------------------------------- segmentation


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
    return _as_mask("pred_mask", pred_mask, truth.shape), truth


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
