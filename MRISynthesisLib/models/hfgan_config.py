"""Sizes of an HF-GAN generator, the constants of its reference layout and its errors.

Kept apart from the network so that the building blocks (:mod:`.hfgan_blocks`) and the
generator (:mod:`.hfgan`) both read them without importing each other.
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

from ..sequences import Sequence, parse_sequence
from .config import ConfigDict

__all__ = ["NUM_INPUTS", "NORM_GROUPS", "REFERENCE_MODALITY_ORDER", "MISSING_VALUE", "HFGANError",
           "StateDictMismatchError", "HFGANConfig"]

#: Number of input channels (one per MRI sequence).
NUM_INPUTS = 4
#: GroupNorm group count used throughout the reference network.
NORM_GROUPS = 8
#: Channel order the public BraSyn 2024 weights are assumed to use (T1, T2, FLAIR, T1ce).
REFERENCE_MODALITY_ORDER: Tuple[Sequence, ...] = (Sequence.T1N, Sequence.T2W, Sequence.T2F, Sequence.T1C)
#: Value of a missing input channel (the minimum of the [-1, 1] intensity scale).
MISSING_VALUE = -1.0



class HFGANError(ValueError):
    """Bad HF-GAN configuration or bad input to the generator."""


class StateDictMismatchError(HFGANError):
    """A state dict that does not have the HF-GAN reference layout."""



# --------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class HFGANConfig(ConfigDict):
    """Sizes of an HF-GAN generator.

    ``image_size`` is the only slice size the model accepts (the position embeddings are
    learned per bottleneck pixel); it must be a multiple of ``2 ** (len(dim_mults) - 1)``.
    """

    tuple_fields = ("dim_mults", "modality_order")
    config_error = HFGANError

    dim: int = 64
    dim_mults: Tuple[int, ...] = (1, 2, 4, 8, 10)
    n_layers: int = 4
    n_heads: int = 16
    image_size: int = 240
    blocks: bool = False
    intensity_encoding: bool = True
    dropout: float = 0.1
    modality_order: Tuple[str, ...] = tuple(s.value for s in REFERENCE_MODALITY_ORDER)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mults", tuple(int(m) for m in self.dim_mults))
        order = tuple(parse_sequence(s).value for s in self.modality_order)
        object.__setattr__(self, "modality_order", order)
        self._validate()

    def _validate(self) -> None:
        """Raise :class:`HFGANError` naming the first size that cannot build a network."""
        if len(self.dim_mults) < 2 or self.dim_mults[0] != 1:
            raise HFGANError(f"HFGANConfig: dim_mults must have >= 2 levels and start with 1, got {self.dim_mults}")
        widths = [self.dim] + [self.dim * m for m in self.dim_mults]
        if min(widths) < NORM_GROUPS or any(w % NORM_GROUPS for w in widths):
            raise HFGANError(
                f"HFGANConfig: dim * each of dim_mults must be a positive multiple of {NORM_GROUPS}, got {widths}"
            )
        if self.n_layers < 1 or self.n_heads < 1 or self.hidden_size % self.n_heads:
            raise HFGANError(
                f"HFGANConfig: need n_layers >= 1 and n_heads dividing {self.hidden_size}, "
                f"got n_layers={self.n_layers}, n_heads={self.n_heads}"
            )
        if self.image_size <= 0 or self.image_size % self.downsample_factor:
            raise HFGANError(
                f"HFGANConfig: image_size must be a positive multiple of {self.downsample_factor}, "
                f"got {self.image_size}"
            )
        if len(set(self.modality_order)) != NUM_INPUTS or len(self.modality_order) != NUM_INPUTS:
            raise HFGANError(
                f"HFGANConfig: modality_order must name the four sequences once each, got {self.modality_order}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise HFGANError(f"HFGANConfig: dropout must be in [0, 1), got {self.dropout}")

    @property
    def hidden_size(self) -> int:
        """Channels at the bottleneck (transformer width)."""
        return self.dim * self.dim_mults[-1]

    @property
    def downsample_factor(self) -> int:
        """Ratio of slice size to bottleneck size."""
        return 2 ** (len(self.dim_mults) - 1)

    @property
    def n_tokens(self) -> int:
        """Number of transformer tokens (bottleneck pixels)."""
        return (self.image_size // self.downsample_factor) ** 2

    @classmethod
    def paper(cls) -> "HFGANConfig":
        """The BraSyn 2024 generator: 80,042,881 parameters, 240 x 240 slices."""
        return cls()

    @classmethod
    def small(cls, image_size: int = 240) -> "HFGANConfig":
        """A ~2 M parameter model that trains on a CPU; any multiple of 8 works as size."""
        return cls(dim=16, dim_mults=(1, 2, 4, 8), n_layers=2, n_heads=4, image_size=image_size)


