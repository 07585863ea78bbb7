"""Similarity of two images voxel by voxel: SSIM (map and mean) and the error metrics MSE, MAE,
NMSE and PSNR, over the whole array or inside a mask."""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import numpy as np
from scipy import ndimage

from .checks import MetricsError, image_pair, resolve_data_range, select_voxels

__all__ = ["SSIM_K1", "SSIM_K2", "UNIFORM_WINDOW_SIZE", "ssim_map", "ssim", "mse", "mae", "nmse", "psnr"]

#: SSIM stabilising constants of Wang et al. (2004): C1 = (K1 L)^2, C2 = (K2 L)^2.
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: Side of the uniform SSIM window (scikit-image's default ``win_size``).
UNIFORM_WINDOW_SIZE = 7


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
    reference_volume, test_volume, _ = image_pair(reference, test, None)
    scale = 1.0 / resolve_data_range(reference_volume, data_range)
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
    reference_volume, test_volume, mask_array = image_pair(reference, test, mask)
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
    reference_volume, test_volume, mask_array = image_pair(reference, test, mask)
    difference = select_voxels(reference_volume, mask_array).astype(np.float64) - select_voxels(test_volume, mask_array)
    return float(np.mean(difference * difference))


def mae(reference: np.ndarray, test: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Mean absolute error over ``mask`` (all voxels when None)."""
    reference_volume, test_volume, mask_array = image_pair(reference, test, mask)
    difference = select_voxels(reference_volume, mask_array).astype(np.float64) - select_voxels(test_volume, mask_array)
    return float(np.mean(np.abs(difference)))


def nmse(reference: np.ndarray, test: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Normalised MSE: ``sum((reference - test)^2) / sum(reference^2)`` over ``mask``."""
    reference_volume, test_volume, mask_array = image_pair(reference, test, mask)
    ref_values = select_voxels(reference_volume, mask_array).astype(np.float64)
    energy = float(np.sum(ref_values * ref_values))
    if energy == 0:
        raise MetricsError("reference: all voxels (inside the mask) are 0, so NMSE is undefined")
    difference = ref_values - select_voxels(test_volume, mask_array)
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
    reference_volume, _, _ = image_pair(reference, test, mask)
    peak = resolve_data_range(reference_volume, data_range)
    error = mse(reference, test, mask)
    if error == 0:
        return math.inf
    return 10.0 * math.log10(peak * peak / error)
