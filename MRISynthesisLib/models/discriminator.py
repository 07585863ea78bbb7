"""PatchGAN discriminator with an auxiliary sequence classifier, for stage-1 (HF-GAN) training.

It looks at one axial slice [B,1,H,W] and returns

* a map of real/fake logits, one per overlapping patch (PatchGAN), and
* [B,4] logits saying which sequence the slice is (canonical order t1n, t1c, t2w, t2f),
  the auxiliary classification that HF-GAN's training adds to the adversarial loss.

Layout, as in HF-GAN's reference training: a 4x4 stride-2 convolution with LeakyReLU(0.2),
then ``n_layers`` 4x4 convolutions (stride 2, the last stride 1) doubling the width up to 8x,
each with group norm and LeakyReLU(0.2); a 4x4 convolution to one channel gives the patch
logits, and a convolution whose kernel spans the whole feature map gives the class logits.
That last kernel depends on the slice size, so the discriminator is built for one
``image_size`` (240 for BraTS) and refuses other sizes.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .config import ConfigDict

NUM_SEQUENCES = 4
_KERNEL = 4
_PADDING = 1


class DiscriminatorInputError(ValueError):
    """A slice the discriminator was not built for."""


def _conv_out(size: int, stride: int) -> int:
    """Output size of a 4x4 convolution with padding 1."""
    return (size + 2 * _PADDING - _KERNEL) // stride + 1


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig(ConfigDict):
    """Hyper-parameters of :class:`PatchDiscriminator`."""

    base_channels: int = 64
    n_layers: int = 3
    image_size: int = 240
    norm_groups: int = 8
    num_classes: int = NUM_SEQUENCES

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise ValueError(f"DiscriminatorConfig.n_layers must be >= 1, got {self.n_layers}")
        if self.base_channels < self.norm_groups or self.base_channels % self.norm_groups:
            raise ValueError(
                f"DiscriminatorConfig.base_channels {self.base_channels} must be a multiple "
                f"of norm_groups {self.norm_groups}"
            )
        if self.patch_map_size < 1:
            raise ValueError(
                f"DiscriminatorConfig.image_size {self.image_size} is too small for {self.n_layers} layers"
            )

    @classmethod
    def paper(cls) -> "DiscriminatorConfig":
        """HF-GAN's BraTS setting: 64 base channels, 3 layers, 240x240 slices."""
        return cls()

    @classmethod
    def small(cls) -> "DiscriminatorConfig":
        """A light configuration for tests: 16 base channels, 64x64 slices."""
        return cls(base_channels=16, image_size=64)

    def channels(self, layer: int) -> int:
        """Width after convolution ``layer`` (0 = the first, un-normalised one)."""
        return self.base_channels * min(2 ** layer, 8)

    @property
    def feature_map_size(self) -> int:
        """Side of the feature map shared by the patch and class heads."""
        size = _conv_out(self.image_size, 2)
        for layer in range(1, self.n_layers + 1):
            size = _conv_out(size, 2 if layer < self.n_layers else 1)
        return size

    @property
    def patch_map_size(self) -> int:
        """Side of the real/fake logit map."""
        return _conv_out(self.feature_map_size, 1)


class PatchDiscriminator(nn.Module):
    """Slice [B,1,H,W] -> (patch logits [B,1,P,P], sequence logits [B,num_classes])."""

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or DiscriminatorConfig.paper()
        cfg = self.config
        layers: list[nn.Module] = [
            nn.Conv2d(1, cfg.channels(0), _KERNEL, stride=2, padding=_PADDING),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for layer in range(1, cfg.n_layers + 1):
            stride = 2 if layer < cfg.n_layers else 1
            width_in, width_out = cfg.channels(layer - 1), cfg.channels(layer)
            layers += [
                nn.Conv2d(width_in, width_out, _KERNEL, stride, _PADDING, bias=False),
                nn.GroupNorm(cfg.norm_groups, cfg.channels(layer)),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        width = cfg.channels(cfg.n_layers)
        self.patch_head = nn.Conv2d(width, 1, _KERNEL, stride=1, padding=_PADDING, bias=False)
        self.class_head = nn.Conv2d(width, cfg.num_classes, cfg.feature_map_size, bias=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch real/fake logits and sequence-class logits for ``image`` [B,1,H,W]."""
        size = self.config.image_size
        if image.ndim != 4 or image.shape[1] != 1 or image.shape[2] != size or image.shape[3] != size:
            raise DiscriminatorInputError(
                f"PatchDiscriminator: expected slices [B,1,{size},{size}], got {list(image.shape)}"
            )
        features = self.features(image)
        return self.patch_head(features), self.class_head(features).flatten(1)


def build_discriminator(config: DiscriminatorConfig | None = None) -> PatchDiscriminator:
    """A new, untrained discriminator."""
    return PatchDiscriminator(config)
