"""Loss terms of the two stages: SSIM (2D/3D, optionally over a region), feature similarity, GAN terms.

SSIM is the map of MONAI's ``compute_ssim_and_cs`` (Wang et al.'s 11-voxel Gaussian window,
sigma 1.5, K1 0.01, K2 0.03) on images scaled to [0, 1] (data range 1), computed with the
Gaussian applied one axis at a time: the same numbers (a test compares them with MONAI's),
but 33 instead of 1331 taps per voxel in 3D, which makes a stage-2 step's SSIM about 7 times
cheaper on the CPU. The map covers the "valid" part of the image (the window's half-width is
lost at each border); region masks are cropped the same way before averaging.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

SSIM_KERNEL = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def gaussian_window_1d(size: int = SSIM_KERNEL, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1D Gaussian of ``size`` taps centred on the middle one (MONAI's SSIM kernel axis)."""
    distance = torch.arange(size, dtype=torch.float32) - (size - 1) / 2.0
    weights = torch.exp(-0.5 * (distance / sigma) ** 2)
    return weights / weights.sum()


def _valid_blur(volumes: torch.Tensor, window: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Gaussian of [N, 1, *spatial] without padding, as one 1D convolution per axis."""
    convolve = F.conv2d if spatial_dims == 2 else F.conv3d
    for axis in range(spatial_dims):
        shape = [1, 1] + [1] * spatial_dims
        shape[2 + axis] = window.numel()
        volumes = convolve(volumes, window.view(shape))
    return volumes


def ssim_map(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM map of [B, C, *spatial] images on [0, 1] (2D or 3D), float32, valid region only."""
    spatial_dims = prediction.ndim - 2
    if spatial_dims not in (2, 3):
        raise ValueError(f"ssim_map: expected [B, C, H, W] or [B, C, D, H, W], got {list(prediction.shape)}")
    if prediction.shape != target.shape:
        raise ValueError(f"ssim_map: shapes differ, {list(prediction.shape)} and {list(target.shape)}")
    small = [s for s in prediction.shape[2:] if s < SSIM_KERNEL]
    if small:
        raise ValueError(
            f"ssim_map: images {list(prediction.shape[2:])} are smaller than the {SSIM_KERNEL}-voxel window")
    x, y = prediction.float(), target.float()
    batch, channels = x.shape[:2]
    moments = torch.stack([x, y, x * x, y * y, x * y], dim=2).reshape(batch * channels * 5, 1, *x.shape[2:])
    # float32 even under mixed precision: variances are differences of nearly equal moments
    with torch.autocast(device_type=x.device.type, enabled=False):
        blurred = _valid_blur(moments, gaussian_window_1d().to(x.device), spatial_dims)
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = blurred.reshape(batch, channels, 5, *blurred.shape[2:]).unbind(2)
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    var_x, var_y, cov_xy = mu_xx - mu_x * mu_x, mu_yy - mu_y * mu_y, mu_xy - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return luminance * (2 * cov_xy + c2) / (var_x + var_y + c2)


def _valid_region(mask: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Crop a [B, C, *spatial] mask like the SSIM map (half a window off each border)."""
    half = SSIM_KERNEL // 2
    index = (slice(None), slice(None)) + (slice(half, -half),) * spatial_dims
    return mask[index]


def ssim_loss(prediction: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``1 - SSIM`` averaged per image (over ``mask`` when given) and then over the batch.

    Images without any mask voxel are left out; when no image has one the loss is a zero
    that keeps the graph (so callers can always add it).
    """
    return ssim_loss_from_map(ssim_map(prediction, target), mask)


def ssim_loss_from_map(values: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`ssim_loss` of an :func:`ssim_map` already computed (one map serves several regions)."""
    dims = tuple(range(1, values.ndim))
    if mask is None:
        return 1.0 - values.mean(dim=dims).mean()
    region = _valid_region(mask.to(values.dtype), values.ndim - 2)
    counts = region.sum(dim=dims)
    keep = counts > 0
    if not bool(keep.any()):
        return values.sum() * 0.0
    per_image = (values * region).sum(dim=dims)[keep] / counts[keep]
    return 1.0 - per_image.mean()


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Stage-1 [-1, 1] intensities -> [0, 1] (no clipping: the generator's output is unbounded)."""
    return (x + 1.0) * 0.5


def scale_by_target(prediction: torch.Tensor, target: torch.Tensor) -> tuple:
    """Map both to [0, 1] with the target's per-image min and max (for SSIM on z-scored crops)."""
    dims = tuple(range(2, target.ndim))
    low = target.amin(dim=dims, keepdim=True)
    high = target.amax(dim=dims, keepdim=True)
    scale = 1.0 / torch.clamp(high - low, min=1e-6)
    return (prediction - low) * scale, (target - low) * scale


def feature_similarity_loss(features: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``1 - cosine similarity`` of two fused feature maps, per image then averaged (HF-GAN's L_sim)."""
    return 1.0 - F.cosine_similarity(features.flatten(1).float(), other.flatten(1).float(), dim=1).mean()


def lesion_contrast_loss(difference: torch.Tensor, label: torch.Tensor, healthy: torch.Tensor,
                         regions: Sequence[int]) -> torch.Tensor:
    """How wrong the synthetic image's tumour contrast is: per item and per tumour region (a label value of
    ``regions``), ``|mean over the region of (fake - real) - mean over healthy brain of (fake - real)|``, summed
    over the items and regions that have both and divided by the batch size (0 for none).

    ``difference`` is fake - real [B, H, W]; ``label`` the tumour labels and ``healthy`` a boolean mask, both of
    the same shape (an item without healthy brain in ``healthy`` has no say). Not in the paper: an L1 or SSIM over the
    whole slice gives an enhancing rim a few per cent of its weight, and a plain L1 over the rim alone is met by
    brightening the whole image. This term is indifferent to a global offset and asks only that each region
    stand out from healthy brain by as much as in the real image. Why each region and not the rim alone: with
    the rim alone (the fifth CPU recipe run) the network met it by brightening the oedema as well, a halo
    instead of a rim. Why the healthy mean is a fixed reference (no gradient): healthy brain holds most of the
    slice, and a term pulling its mean down, with a weight per pixel above the whole-slice L1's, shifted every
    target's intensities (that run lost SSIM on all of them); the pixel losses set healthy brain alone. Why
    divided by the batch size and not by the items that have tumour: a batch with one such item then weighs
    it like any other item, not eight times.
    """
    difference = difference.float()  # sums over a slice overflow in half precision
    healthy = healthy.float()
    healthy_count = healthy.sum((1, 2))
    reference = ((difference * healthy).sum((1, 2)) / healthy_count.clamp_min(1.0)).detach()
    total = difference.sum() * 0.0
    for region in regions:
        inside = (label == region).float()
        count = inside.sum((1, 2))
        used = (count > 0) & (healthy_count > 0)
        if bool(used.any()):
            gap = (difference * inside).sum((1, 2)) / count.clamp_min(1.0) - reference
            total = total + gap[used].abs().sum()
    return total / difference.shape[0]


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """PatchGAN binary cross-entropy against all-real or all-fake labels."""
    labels = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
