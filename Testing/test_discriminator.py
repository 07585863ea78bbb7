"""Tests of the PatchGAN discriminator with sequence classifier (models/discriminator.py)."""
from __future__ import annotations

import pytest
import torch

from MRISynthesisLib.models.discriminator import (
    DiscriminatorConfig,
    DiscriminatorInputError,
    PatchDiscriminator,
    build_discriminator,
)


def test_config_presets_and_round_trip() -> None:
    assert DiscriminatorConfig.paper().base_channels == 64
    assert DiscriminatorConfig.paper().image_size == 240
    for config in (DiscriminatorConfig.paper(), DiscriminatorConfig.small()):
        assert DiscriminatorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown keys"):
        DiscriminatorConfig.from_dict({"image_size": 64, "depth": 2})
    with pytest.raises(ValueError, match="too small"):
        DiscriminatorConfig(image_size=8)
    with pytest.raises(ValueError, match="multiple of norm_groups"):
        DiscriminatorConfig(base_channels=12)


def test_paper_shapes_match_brats_slices() -> None:
    # 240 -> 120 -> 60 -> 30 -> 29 (stride-1 layer) -> 28 patch logits; the classifier spans 29x29
    model = PatchDiscriminator(DiscriminatorConfig.paper())
    assert model.class_head.kernel_size == (29, 29)
    patches, classes = model(torch.randn(1, 1, 240, 240))
    assert patches.shape == (1, 1, 28, 28)
    assert classes.shape == (1, 4)
    widths = [m.out_channels for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert widths == [64, 128, 256, 512]


def test_small_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    model = build_discriminator(DiscriminatorConfig.small())
    slices = torch.randn(3, 1, 64, 64)
    patches, classes = model(slices)
    # 64 -> 32 -> 16 -> 8 -> 7 -> 6
    assert patches.shape == (3, 1, 6, 6)
    assert classes.shape == (3, 4)
    labels = torch.tensor([0, 2, 3])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(patches, torch.ones_like(patches))
    loss = loss + torch.nn.functional.cross_entropy(classes, labels)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_rejects_slices_of_another_size() -> None:
    model = build_discriminator(DiscriminatorConfig.small())
    with pytest.raises(DiscriminatorInputError, match=r"\[B,1,64,64\]"):
        model(torch.zeros(1, 1, 64, 48))
    with pytest.raises(DiscriminatorInputError, match="expected slices"):
        model(torch.zeros(1, 2, 64, 64))
