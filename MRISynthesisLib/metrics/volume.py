"""Scores of one synthetic volume against the acquired one: similarity over the brain, the
tumour and the healthy rest, the whole-volume SSIM, region PSNR and the T1c enhancement contrast."""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np

from .checks import MetricsError, as_float_volume, as_mask, image_pair, non_empty_mask
from .image import mae, nmse, psnr, ssim, ssim_map
from .normalisation import normalise_for_metrics, normalise_whole_volume
from .segmentation import brats_regions

__all__ = ["volume_ssim", "image_metrics", "region_psnr", "enhancement_contrast"]


def volume_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM over the whole volume, background included, each image scaled by :func:`normalise_whole_volume`.

    The kind of number the two-stage paper reports as "SSIM-Whole" (Table 1, scored as BraSyn
    does: whole volume, whole-volume percentile scaling), with the Gaussian-window
    :func:`ssim`. It is far more lenient than the brain-only ``ssim`` of :func:`image_metrics`: the
    background, most of a BraTS volume, scores 1.
    """
    reference_volume, test_volume, _ = image_pair(reference, test, None)
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
    reference_volume, test_volume, _ = image_pair(reference, test, None)
    brain = non_empty_mask("brain_mask", brain_mask, reference_volume.shape)
    reference_01 = normalise_for_metrics(reference_volume, brain)
    test_01 = normalise_for_metrics(test_volume, brain)
    values = ssim_map(reference_01, test_01, data_range=1.0)

    tumour = np.zeros_like(brain)
    if tumour_mask is not None:
        tumour = as_mask("tumour_mask", tumour_mask, brain.shape) & brain
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


def region_psnr(reference: np.ndarray, test: np.ndarray, brain: np.ndarray,
                tumour: Optional[np.ndarray]) -> Dict[str, float]:
    """PSNR (dB) over the tumour region and over the healthy brain, as :func:`image_metrics`
    computes the whole-brain PSNR: both images mapped to [0, 1] by their own brain percentiles,
    data range 1. Keys ``psnr_tumour`` and ``psnr_healthy``; empty regions give NaN."""
    brain = np.asarray(brain, dtype=bool)
    reference_01 = normalise_for_metrics(reference, brain)
    test_01 = normalise_for_metrics(test, brain)
    tumour = np.zeros_like(brain) if tumour is None else (np.asarray(tumour) != 0) & brain
    out = {}
    for key, region in (("psnr_tumour", tumour), ("psnr_healthy", brain & ~tumour)):
        out[key] = psnr(reference_01, test_01, region, data_range=1.0) if region.any() else math.nan
    return out


def enhancement_contrast(image: np.ndarray, label: np.ndarray, brain_mask: np.ndarray) -> float:
    """Mean of ``image`` over the enhancing tumour divided by its median over healthy brain.

    Whether a (synthetic) T1c shows contrast enhancement at all, which SSIM hides: the
    enhancing tumour is a few percent of the brain. Acquired phantom T1c scores 2-3, an
    image without enhancement about 1. ``label``: BraTS 2023 labels. NaN without enhancing
    tumour or healthy brain, or when the healthy median is not positive.
    """
    volume = as_float_volume("image", image)
    brain = as_mask("brain_mask", brain_mask, volume.shape)
    regions = brats_regions(label)
    if regions["ET"].shape != volume.shape:
        raise MetricsError(f"label: shape {regions['ET'].shape} does not match the image shape {volume.shape}")
    enhancing = regions["ET"] & brain
    healthy = brain & ~regions["WT"]
    if not enhancing.any() or not healthy.any():
        return float("nan")
    healthy_median = float(np.median(volume[healthy]))
    return float(np.mean(volume[enhancing], dtype=np.float64) / healthy_median) if healthy_median > 0 else float("nan")
