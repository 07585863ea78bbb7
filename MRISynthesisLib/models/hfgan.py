"""HF-GAN generator with intensity encoding: stage 1 of the BraSyn 2024 two-stage method.

The network synthesises one missing sequence of an axial slice from the sequences that
are available. It has three parts, named as in the public HF-GAN code
(SSTDV-Project/HF-GAN, ``network/network.py``) so that its ``state_dict()`` keys are
exactly those of a checkpoint saved from that code and the BraSyn 2024 weights load as is:

* ``encoder`` - hybrid fusion: one CNN encoder over all four channels ("early fusion") plus
  one encoder per sequence; the deepest features are fused with per-sequence channel
  attention (a sigmoid-weighted and a softmax-weighted sum, joined by a 1x1 conv) and the
  skip features are the mean over the available sequences (plus the early encoder's when
  more than one sequence is available).
* ``middle`` - the "modality infuser": a transformer over the bottleneck pixels with
  learned position embeddings; the condition ``[one-hot target (4), target intensity (1)]``
  goes through ``Linear -> Linear -> SiLU -> Linear`` and is added to every token.
* ``decoder`` - CNN decoder with skip connections, ending in a 1x1 conv (no tanh, as in
  the reference; outputs live on the [-1, 1] scale the inputs were normalised to).

Channel ``i`` of the input is ``config.modality_order[i]``; missing channels are set to -1
inside the model, whatever the caller put there.
"""
from __future__ import annotations

import dataclasses
import math
import re
import zlib
from typing import Dict, List, Mapping, Optional, Sequence as SequenceType, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..sequences import INTENSITY_PRIORS, Sequence, parse_sequence  # INTENSITY_PRIORS re-exported
from .config import ConfigDict

__all__ = [
    "INTENSITY_PRIORS",
    "REFERENCE_MODALITY_ORDER",
    "HFGANConfig",
    "HFGANError",
    "HFGANGenerator",
    "StateDictMismatchError",
    "availability_mask",
    "check_layout",
    "expected_layout",
    "inference_intensity",
    "reference_layout_config",
    "seeded_reference_state_dict",
    "strip_prefixes",
]

#: Number of input channels (one per MRI sequence).
NUM_INPUTS = 4
#: GroupNorm group count used throughout the reference network.
NORM_GROUPS = 8
#: Channel order the public BraSyn 2024 weights are assumed to use (T1, T2, FLAIR, T1ce).
REFERENCE_MODALITY_ORDER: Tuple[Sequence, ...] = (Sequence.T1N, Sequence.T2W, Sequence.T2F, Sequence.T1C)
#: Value of a missing input channel (the minimum of the [-1, 1] intensity scale).
MISSING_VALUE = -1.0


Availability = Union[torch.Tensor, SequenceType[SequenceType[int]]]


class HFGANError(ValueError):
    """Bad HF-GAN configuration or bad input to the generator."""


class StateDictMismatchError(HFGANError):
    """A state dict that does not have the HF-GAN reference layout."""


def inference_intensity(
    sequence: Union[Sequence, str], mode: str = "mean", k: float = 0.0, value: Optional[float] = None
) -> float:
    """Target intensity to condition on when the target sequence is missing.

    ``value`` wins when given; otherwise ``mode="mean"`` gives the prior mean (the paper's
    choice) and ``mode="sigma"`` gives ``mean + k * std``.
    """
    if value is not None:
        result = float(value)
        if not math.isfinite(result):
            raise HFGANError(f"inference_intensity: value must be finite, got {value!r}")
        return result
    mean, std = INTENSITY_PRIORS[parse_sequence(sequence)]
    if mode == "mean":
        return mean
    if mode == "sigma":
        return mean + float(k) * std
    raise HFGANError(f"inference_intensity: mode must be 'mean' or 'sigma', got {mode!r}")


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


# --------------------------------------------------------------------------- CNN parts


class NormActConv(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv (pre-activation conv unit)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(NORM_GROUPS, dim_in)
        self.act = nn.SiLU()
        self.proj = nn.Conv2d(dim_in, dim_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.norm(x)))


class ResBlock(nn.Module):
    """One or two pre-activation convs plus a (1x1 conv when widths differ) shortcut."""

    def __init__(self, dim_in: int, dim_out: int, blocks: bool) -> None:
        super().__init__()
        self.block1 = NormActConv(dim_in, dim_out)
        self.block2 = NormActConv(dim_out, dim_out) if blocks else None
        self.res_conv = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        if self.block2 is not None:
            h = self.block2(h)
        return h + self.res_conv(x)


class Downsample(nn.Module):
    """Halve the size: pad one pixel right/bottom, then a 3x3 stride-2 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the size: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level_widths(config: HFGANConfig) -> List[Tuple[int, int]]:
    """(in, out) channels of each encoder level."""
    dims = [config.dim] + [config.dim * m for m in config.dim_mults]
    return list(zip(dims[:-1], dims[1:]))


class ConvEncoder(nn.Module):
    """Initial 3x3 conv, then per level a ResBlock and (except the last) a Downsample."""

    def __init__(self, config: HFGANConfig, in_channels: int) -> None:
        super().__init__()
        self.conv_initial = nn.Conv2d(in_channels, config.dim, 3, padding=1)
        widths = _level_widths(config)
        self.downs = nn.ModuleList(
            nn.ModuleList(
                [ResBlock(w_in, w_out, config.blocks), Downsample(w_out) if i < len(widths) - 1 else nn.Identity()]
            )
            for i, (w_in, w_out) in enumerate(widths)
        )

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Features after each level's ResBlock; the last one is the encoder output."""
        x = self.conv_initial(x)
        levels = []
        for block, down in self.downs:
            x = block(x)
            levels.append(x)
            x = down(x)
        return levels


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation style per-channel weights in (0, 1), shape [B, C, 1, 1]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attn = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels, 1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)


class HybridFusionEncoder(nn.Module):
    """Early-fusion encoder + one encoder per sequence, fused by channel attention.

    Fusion per batch item over its available sequences ``A`` (``s_i`` sigmoid channel
    weights, ``f_i`` deepest features, ``e`` the early encoder):

    * one sequence: ``f_i s_i`` and ``f_i``; skips ``h_i``; the early encoder is unused.
    * several: ``sum_A f_i s_i[0] + f_e s_e`` and ``sum_A f_i softmax_A(s[0])_i + f_e``;
      skips ``mean_A h_i + h_e``. Here ``s_i[0]`` is the weight of channel 0 only,
      broadcast over all channels: that is what the reference computes (it indexes the
      channel axis with 0), and its trained weights expect it.

    The two sums are joined by the 1x1 ``conv1``.
    """

    def __init__(self, config: HFGANConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.encoder_early = ConvEncoder(config, NUM_INPUTS)
        self.encoder_middles = nn.ModuleList(ConvEncoder(config, 1) for _ in range(NUM_INPUTS))
        self.attn_blocks = nn.ModuleList(ChannelAttention(width) for _ in range(NUM_INPUTS + 1))
        self.conv1 = nn.Conv2d(2 * width, width, 1)

    def forward(self, x: torch.Tensor, host_mask: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Fused bottleneck and skip features (levels 1..L-1; level 0 feeds no skip).

        ``x`` must already hold -1 in missing channels; ``host_mask`` is a bool [B, 4] on the
        CPU (so that choosing which encoders to run needs no device sync). Each sequence
        encoder runs once on the whole batch (rows where it is missing get zero weight);
        encoders that no row needs are skipped.
        """
        batch = x.shape[0]
        present = [i for i in range(NUM_INPUTS) if bool(host_mask[:, i].any())]
        any_multi = bool((host_mask.sum(dim=1) > 1).any())
        mask = host_mask.to(x.device, non_blocking=True)
        weights = mask.to(x.dtype)
        count = weights.sum(dim=1)
        multi = (count > 1).to(x.dtype).view(batch, 1, 1, 1)
        skips: List[Optional[torch.Tensor]] = [None] * (len(self.encoder_early.downs) - 1)
        feats, sigmoids = [], []
        for i in present:
            levels = self.encoder_middles[i](x[:, i : i + 1])
            _accumulate(skips, levels[1:], (weights[:, i] / count).view(batch, 1, 1, 1))
            feats.append(levels[-1])
            sigmoids.append(self.attn_blocks[i](levels[-1]))
        row_mask = mask[:, present].view(batch, len(present), 1, 1, 1)
        first = torch.stack([s[:, :1] for s in sigmoids], dim=1)  # channel-0 weights [B, k, 1, 1, 1]
        soft = first.masked_fill(~row_mask, float("-inf")).softmax(dim=1)
        fused_s = sum(
            f * (torch.where(multi > 0, first[:, j], s) * row_mask[:, j].to(s.dtype))
            for j, (f, s) in enumerate(zip(feats, sigmoids))
        )
        fused_h = sum(f * soft[:, j] for j, f in enumerate(feats))
        if any_multi:
            early = self.encoder_early(x)
            _accumulate(skips, early[1:], multi)
            fused_s = fused_s + early[-1] * (self.attn_blocks[-1](early[-1]) * multi)
            fused_h = fused_h + early[-1] * multi
        fused = self.conv1(torch.cat([fused_s, fused_h], dim=1))
        return fused, skips  # type: ignore[return-value]


def _accumulate(totals: List[Optional[torch.Tensor]], features: List[torch.Tensor], weight: torch.Tensor) -> None:
    """``totals[k] += features[k] * weight`` (per-row weight), starting from None."""
    for k, feature in enumerate(features):
        term = feature * weight
        totals[k] = term if totals[k] is None else totals[k] + term


class ConvDecoder(nn.Module):
    """Per level: concat skip -> ResBlock -> Upsample; then ResBlock, GN, SiLU, 1x1 conv."""

    def __init__(self, config: HFGANConfig) -> None:
        super().__init__()
        widths = _level_widths(config)[1:]
        self.ups = nn.ModuleList(
            nn.ModuleList([ResBlock(2 * w_out, w_in, config.blocks), Upsample(w_in)])
            for w_in, w_out in reversed(widths)
        )
        self.conv_final = nn.Sequential(
            ResBlock(config.dim, config.dim, config.blocks),
            nn.GroupNorm(NORM_GROUPS, config.dim),
            nn.SiLU(),
            nn.Conv2d(config.dim, 1, 1),
        )

    def forward(self, x: torch.Tensor, skips: List[torch.Tensor]) -> torch.Tensor:
        for (block, up), skip in zip(self.ups, reversed(skips)):
            x = up(block(torch.cat([x, skip], dim=1)))
        return self.conv_final(x)


# --------------------------------------------------------------------------- transformer parts


class TokenEmbedding(nn.Module):
    """1x1 conv projection of the bottleneck, flattened to tokens, plus learned positions."""

    def __init__(self, hidden: int, n_tokens: int, dropout: float) -> None:
        super().__init__()
        self.patch_embeddings = nn.Conv2d(hidden, hidden, 1)
        self.position_embeddings = nn.Parameter(torch.zeros(1, n_tokens, hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embeddings(x).flatten(2).transpose(1, 2)
        return self.dropout(tokens + self.position_embeddings)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate query/key/value/out projections."""

    def __init__(self, hidden: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.attn_dropout = dropout
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.proj_dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, hidden = x.shape
        return x.view(batch, tokens, self.n_heads, hidden // self.n_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        p = self.attn_dropout if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj_dropout(self.out(context.transpose(1, 2).reshape(x.shape)))


class FeedForward(nn.Module):
    """Linear (x4) -> SiLU -> Linear, with dropout; Xavier-initialised as in the reference."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, 4 * hidden)
        self.fc2 = nn.Linear(4 * hidden, hidden)
        self.act_fn = nn.SiLU()
        self.dropout = nn.Dropout(dropout)
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.act_fn(self.fc1(x)))))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer (LayerNorm eps 1e-6)."""

    def __init__(self, hidden: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.ffn = FeedForward(hidden, dropout)
        self.attn = SelfAttention(hidden, n_heads, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attention_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class ModalityInfuser(nn.Module):
    """Transformer over bottleneck tokens, conditioned on target sequence and intensity."""

    def __init__(self, config: HFGANConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.intensity_encoding = config.intensity_encoding
        cond_width = NUM_INPUTS + (1 if config.intensity_encoding else 0)
        self.modality_embedding = nn.Sequential(
            nn.Linear(cond_width, hidden), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        self.embedding = TokenEmbedding(hidden, config.n_tokens, config.dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(hidden, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.encoder_norm = nn.LayerNorm(hidden, eps=1e-6)

    def condition(self, target: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
        """Condition vector [B, hidden] from target index and target intensity."""
        dtype = self.modality_embedding[0].weight.dtype
        code = F.one_hot(target, NUM_INPUTS).to(dtype)
        if self.intensity_encoding:
            code = torch.cat([code, intensity.to(dtype).view(-1, 1)], dim=1)
        return self.modality_embedding(code)

    def forward(self, x: torch.Tensor, target: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        tokens = self.embedding(x) + self.condition(target, intensity).unsqueeze(1)
        for layer in self.layers:
            tokens = layer(tokens)
        tokens = self.encoder_norm(tokens)
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)


# --------------------------------------------------------------------------- generator


class HFGANGenerator(nn.Module):
    """HF-GAN generator: ``generator(x, available, target, intensity) -> [B, 1, H, W]``."""

    def __init__(self, config: Optional[HFGANConfig] = None) -> None:
        super().__init__()
        self.config = config if config is not None else HFGANConfig.paper()
        self.encoder = HybridFusionEncoder(self.config)
        self.decoder = ConvDecoder(self.config)
        self.middle = ModalityInfuser(self.config)
        #: Intensity-encoding prior per sequence (mean, std); training replaces the paper's
        #: BraTS table with its own data's, and checkpoints store it.
        self.intensity_priors: Dict[Sequence, Tuple[float, float]] = dict(INTENSITY_PRIORS)

    @property
    def modality_order(self) -> Tuple[Sequence, ...]:
        """Sequence of each input channel."""
        return tuple(Sequence(s) for s in self.config.modality_order)

    def channel_of(self, sequence: Union[Sequence, str]) -> int:
        """Input channel index of a sequence."""
        return self.modality_order.index(parse_sequence(sequence))

    def forward(
        self,
        x: torch.Tensor,
        available: Availability,
        target: Union[torch.Tensor, int],
        intensity: Union[torch.Tensor, float],
    ) -> torch.Tensor:
        """Synthesise channel ``target`` from the ``available`` channels of ``x``.

        ``x``: [B, 4, H, W] in ``modality_order``; ``available``: per item a list of channel
        indices (or a bool [B, 4] tensor); ``target``: [B] long (or an int for all);
        ``intensity``: [B] float (or a float for all). Returns [B, 1, H, W].
        """
        return self.forward_with_features(x, available, target, intensity)[0]

    def forward_with_features(
        self,
        x: torch.Tensor,
        available: Availability,
        target: Union[torch.Tensor, int],
        intensity: Union[torch.Tensor, float],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Output and the fused bottleneck features (for the cosine feature-consistency loss)."""
        fused, skips = self.encode(x, available)
        target_t, intensity_t = self._condition_inputs(target, intensity, x.shape[0], x.device)
        tokens = self.middle(fused, target_t, intensity_t)
        return self.decoder(tokens, skips), fused

    def encode(self, x: torch.Tensor, available: Availability) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Fused bottleneck [B, C, h, w] and skip features; missing channels are set to -1."""
        self._check_input(x)
        host_mask = availability_mask(available, x.shape[0])
        missing = ~host_mask.to(x.device, non_blocking=True).view(x.shape[0], NUM_INPUTS, 1, 1)
        return self.encoder(x.masked_fill(missing, MISSING_VALUE), host_mask)

    def _check_input(self, x: torch.Tensor) -> None:
        """One-line error unless x is a float [B, 4, S, S] with S = config.image_size."""
        size = self.config.image_size
        if x.dim() != 4 or x.shape[1] != NUM_INPUTS or tuple(x.shape[2:]) != (size, size) or not x.is_floating_point():
            raise HFGANError(
                f"HFGANGenerator: input must be a float [B, {NUM_INPUTS}, {size}, {size}] tensor, "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise HFGANError("HFGANGenerator: input batch is empty")

    @staticmethod
    def _condition_inputs(
        target: Union[torch.Tensor, int], intensity: Union[torch.Tensor, float], batch: int, device: torch.device
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Target [B] long and intensity [B] tensors on ``device``; scalars are broadcast."""
        target_t = torch.as_tensor(target, device=device)
        intensity_t = torch.as_tensor(intensity, device=device)
        if target_t.dim() == 0:
            target_t = target_t.expand(batch)
        if intensity_t.dim() == 0:
            intensity_t = intensity_t.expand(batch)
        if target_t.shape != (batch,) or intensity_t.shape != (batch,):
            raise HFGANError(
                f"HFGANGenerator: target and intensity must have shape [{batch}], "
                f"got {tuple(target_t.shape)} and {tuple(intensity_t.shape)}"
            )
        if target_t.is_floating_point() or bool(((target_t < 0) | (target_t >= NUM_INPUTS)).any()):
            raise HFGANError(
                f"HFGANGenerator: target must hold channel indices 0-{NUM_INPUTS - 1}, got {target_t.tolist()}"
            )
        return target_t.long(), intensity_t

    @classmethod
    def from_reference_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        modality_order: SequenceType[Union[Sequence, str]] = REFERENCE_MODALITY_ORDER,
        n_heads: int = 16,
    ) -> "HFGANGenerator":
        """Generator holding the weights of a reference-layout state dict (``module.`` tolerated).

        The config is inferred from the shapes (the head count cannot be, the reference
        fixes it to 16); the load is strict and a mismatch raises
        :class:`StateDictMismatchError` naming the first offending key.
        """
        state = strip_prefixes(state_dict)
        config = dataclasses.replace(
            reference_layout_config(state, n_heads=n_heads),
            modality_order=tuple(parse_sequence(s).value for s in modality_order),
        )
        check_layout(state, config)
        with torch.device("meta"):
            model = cls(config)
        model = model.to_empty(device="cpu")
        model.load_state_dict(state, strict=True)
        return model


def availability_mask(available: Availability, batch: int) -> torch.Tensor:
    """Bool [B, 4] CPU mask from per-item index lists (or a bool mask); one-line error if invalid."""
    if isinstance(available, torch.Tensor):
        mask = available.to(device="cpu", dtype=torch.bool)
        if mask.shape != (batch, NUM_INPUTS):
            raise HFGANError(f"available: mask must have shape [{batch}, {NUM_INPUTS}], got {tuple(mask.shape)}")
    else:
        if len(available) != batch:
            raise HFGANError(f"available: need one index list per batch item ({batch}), got {len(available)}")
        rows = [_mask_row(item, n) for n, item in enumerate(available)]
        mask = torch.tensor(rows, dtype=torch.bool)
    if not bool(mask.any(dim=1).all()):
        raise HFGANError("available: every batch item needs at least one available channel")
    return mask


def _mask_row(indices: SequenceType[int], item: int) -> List[bool]:
    """Availability of the four channels for one batch item."""
    values = [int(i) for i in indices]
    if len(set(values)) != len(values) or any(not 0 <= i < NUM_INPUTS for i in values):
        raise HFGANError(f"available[{item}]: need distinct channel indices 0-{NUM_INPUTS - 1}, got {list(indices)}")
    return [c in values for c in range(NUM_INPUTS)]


# --------------------------------------------------------------------------- reference layout


_PREFIXES = ("module.", "_orig_mod.")


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drop the ``module.`` (DataParallel/Accelerate) or ``_orig_mod.`` (torch.compile) prefix."""
    state = dict(state_dict)
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _shape(state: Mapping[str, torch.Tensor], key: str) -> Tuple[int, ...]:
    """Shape of ``state[key]``; StateDictMismatchError when absent."""
    if key not in state:
        raise StateDictMismatchError(f"HF-GAN state dict: missing key {key!r}")
    return tuple(state[key].shape)


def _count_indices(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    """Number of consecutive indices ``j`` (from 0) for which ``pattern.format(j)`` is a key."""
    regex = re.compile(re.escape(pattern).replace(r"\{\}", r"(\d+)"))
    found = {int(m.group(1)) for m in (regex.fullmatch(k) for k in state) if m}
    count = 0
    while count in found:
        count += 1
    return count


def reference_layout_config(state_dict: Mapping[str, torch.Tensor], n_heads: int = 16) -> HFGANConfig:
    """Infer the generator config from a reference-layout state dict's shapes."""
    state = strip_prefixes(state_dict)
    dim = _shape(state, "encoder.encoder_early.conv_initial.weight")[0]
    levels = _count_indices(state, "encoder.encoder_early.downs.{}.0.block1.proj.weight")
    if levels < 2:
        missing = "encoder.encoder_early.downs.1.0.block1.proj.weight"
        raise StateDictMismatchError(f"HF-GAN state dict: missing key {missing!r}")
    widths = [_shape(state, f"encoder.encoder_early.downs.{j}.0.block1.proj.weight")[0] for j in range(levels)]
    if any(w % dim for w in widths):
        raise StateDictMismatchError(f"HF-GAN state dict: encoder widths {widths} are not multiples of dim {dim}")
    tokens = _shape(state, "middle.embedding.position_embeddings")[1]
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise StateDictMismatchError(f"HF-GAN state dict: position embeddings hold {tokens} tokens, not a square grid")
    cond_width = _shape(state, "middle.modality_embedding.0.weight")[1]
    if cond_width not in (NUM_INPUTS, NUM_INPUTS + 1):
        raise StateDictMismatchError(
            f"HF-GAN state dict: 'middle.modality_embedding.0.weight' has input width {cond_width}, expected 4 or 5"
        )
    try:
        return HFGANConfig(
            dim=dim,
            dim_mults=tuple(w // dim for w in widths),
            n_layers=_count_indices(state, "middle.layers.{}.attn.query.weight"),
            n_heads=n_heads,
            image_size=grid * 2 ** (levels - 1),
            blocks="encoder.encoder_early.downs.0.0.block2.proj.weight" in state,
            intensity_encoding=cond_width == NUM_INPUTS + 1,
        )
    except StateDictMismatchError:
        raise
    except HFGANError as exc:
        raise StateDictMismatchError(f"HF-GAN state dict: inferred sizes are not a valid network ({exc})") from None


def expected_layout(config: HFGANConfig) -> Dict[str, Tuple[int, ...]]:
    """Parameter names and shapes of a generator with ``config`` (built on the meta device)."""
    with torch.device("meta"):
        model = HFGANGenerator(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_layout(state_dict: Mapping[str, torch.Tensor], config: HFGANConfig) -> None:
    """Raise StateDictMismatchError naming the first missing, unexpected or wrongly shaped key."""
    expected = expected_layout(config)
    for key in expected:
        if key not in state_dict:
            raise StateDictMismatchError(f"HF-GAN state dict: missing key {key!r}")
    for key in state_dict:
        if key not in expected:
            raise StateDictMismatchError(f"HF-GAN state dict: unexpected key {key!r}")
    for key, shape in expected.items():
        if tuple(state_dict[key].shape) != shape:
            raise StateDictMismatchError(
                f"HF-GAN state dict: {key!r} has shape {tuple(state_dict[key].shape)}, expected {shape}"
            )


def seeded_reference_state_dict(config: HFGANConfig, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Deterministic, well-scaled float32 weights in the reference layout (for fixtures and tests).

    Every tensor has its own ``torch.Generator`` seeded from ``seed`` and its key, so the
    values do not depend on dict order. Conv/linear weights are N(0, 1/fan_in), biases and
    position embeddings N(0, 0.1^2), norm weights 1 + N(0, 0.1^2).
    """
    with torch.device("meta"):
        model = HFGANGenerator(config)
    state: Dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            key = f"{module_name}.{name}" if module_name else name
            gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))
            noise = torch.randn(tuple(param.shape), generator=gen, dtype=torch.float32)
            state[key] = _scale_noise(module, name, noise)
    return {k: state[k] for k in model.state_dict()}


def _scale_noise(module: nn.Module, name: str, noise: torch.Tensor) -> torch.Tensor:
    """Scale standard normal noise to a sensible value for parameter ``name`` of ``module``."""
    if isinstance(module, (nn.GroupNorm, nn.LayerNorm)) and name == "weight":
        return 1.0 + 0.1 * noise
    if name == "weight" and noise.dim() >= 2:
        fan_in = noise[0].numel()
        return noise / math.sqrt(fan_in)
    return 0.1 * noise
