"""Training loss terms on real phantom images: the separable SSIM against MONAI's, and region averaging."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.metrics.regression import compute_ssim_and_cs

from MRISynthesisLib import phantom
from MRISynthesisLib.sequences import Sequence
from MRISynthesisLib.training.losses import (
    SSIM_KERNEL,
    SSIM_SIGMA,
    gaussian_window_1d,
    ssim_loss,
    ssim_loss_from_map,
    ssim_map,
)


@pytest.fixture(scope="module")
def volumes():
    """T1n and T1c of a small phantom on [0, 1] ([D, H, W] float32 tensors) and its tumour mask."""
    case = phantom.generate_case(7, small=True)

    def unit(sequence: Sequence) -> torch.Tensor:
        array = sitk.GetArrayFromImage(case.images[sequence]).astype(np.float32)
        return torch.from_numpy(array / np.percentile(array[array > 0], 99.5)).clamp(0, 1)

    label = sitk.GetArrayFromImage(case.label)
    return unit(Sequence.T1N), unit(Sequence.T1C), torch.from_numpy(label > 0)


def _monai(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    dims = prediction.ndim - 2
    return compute_ssim_and_cs(prediction, target, dims, [SSIM_KERNEL] * dims, [SSIM_SIGMA] * dims)[0]


def test_window_is_monais_normalised_gaussian():
    window = gaussian_window_1d()
    assert window.shape == (11,) and float(window.sum()) == pytest.approx(1.0)
    assert int(window.argmax()) == 5 and torch.allclose(window, window.flip(0))
    assert float(window[5] / window[4]) == pytest.approx(np.exp(0.5 / SSIM_SIGMA**2))


@pytest.mark.parametrize("dims", [2, 3])
def test_separable_ssim_map_and_its_gradient_equal_monai(volumes, dims):
    t1n, t1c, _ = volumes
    if dims == 2:  # a batch of 4 axial slices through the tumour
        prediction, target = t1n[28:32, None], t1c[28:32, None]
    else:  # a 3D crop, as stage 2 trains on
        prediction, target = t1n[None, None, :48, 20:68, 20:68], t1c[None, None, :48, 20:68, 20:68]
    ours_input = prediction.clone().requires_grad_(True)
    monai_input = prediction.clone().requires_grad_(True)
    ours, reference = ssim_map(ours_input, target), _monai(monai_input, target)
    assert ours.shape == reference.shape
    values, expected = ours.detach(), reference.detach()
    # float32 summation order differs (one axis at a time): a few 1e-4 where the local variance is tiny
    assert float((values - expected).abs().max()) < 1e-3
    assert float(values.mean()) == pytest.approx(float(expected.mean()), abs=1e-6)
    assert 0.1 < float(values.mean()) < 0.99  # different sequences: far from the trivial values
    ours.mean().backward()
    reference.mean().backward()
    relative = (ours_input.grad - monai_input.grad).norm() / monai_input.grad.norm()
    assert float(relative) < 1e-3


def test_ssim_map_stays_float32_under_mixed_precision(volumes):
    t1n, t1c, _ = volumes
    prediction, target = t1n[28:32, None], t1c[28:32, None]
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = ssim_map(prediction, target)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, ssim_map(prediction, target))


def test_ssim_loss_averages_per_image_over_the_region_and_skips_empty_ones(volumes):
    t1n, t1c, tumour = volumes
    slices = [int(z) for z in torch.nonzero(tumour.flatten(1).any(1)).flatten()[:2]]
    empty = int(torch.nonzero(~tumour.flatten(1).any(1) & (t1n.flatten(1).amax(1) > 0)).flatten()[0])
    index = slices + [empty]
    prediction, target, mask = t1n[index, None], t1c[index, None], tumour[index, None]
    values = ssim_map(prediction, target)
    assert float(ssim_loss(prediction, target)) == pytest.approx(1 - float(values.mean()), abs=1e-6)
    half = SSIM_KERNEL // 2
    region = mask[:, :, half:-half, half:-half]
    expected = 1 - np.mean([float(values[i][region[i]].mean()) for i in range(2)])  # the empty slice is left out
    assert float(ssim_loss(prediction, target, mask)) == pytest.approx(expected, abs=1e-6)
    assert float(ssim_loss_from_map(values, mask)) == float(ssim_loss(prediction, target, mask))
    assert float(ssim_loss(target, target, mask)) == pytest.approx(0.0, abs=1e-6)
    nothing = ssim_loss(prediction.clone().requires_grad_(True), target, torch.zeros_like(mask))
    assert float(nothing.detach()) == 0.0 and nothing.requires_grad  # keeps the graph so callers can add it


def test_ssim_map_refuses_small_or_mismatched_images():
    with pytest.raises(ValueError, match="smaller than"):
        ssim_map(torch.rand(1, 1, 8, 32), torch.rand(1, 1, 8, 32))
    with pytest.raises(ValueError, match="shapes differ"):
        ssim_map(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 33))
    with pytest.raises(ValueError, match="expected"):
        ssim_map(torch.rand(32, 32), torch.rand(32, 32))
