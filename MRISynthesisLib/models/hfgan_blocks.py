"""Building blocks of the HF-GAN generator: the CNN parts (encoders, channel-attention fusion,
decoder) and the transformer parts (the "modality infuser"), named as in the reference code."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .hfgan_config import NORM_GROUPS, NUM_INPUTS, HFGANConfig

__all__ = ["NormActConv", "ResBlock", "Downsample", "Upsample", "ConvEncoder", "ChannelAttention",
           "HybridFusionEncoder", "ConvDecoder", "TokenEmbedding", "SelfAttention", "FeedForward",
           "TransformerLayer", "ModalityInfuser"]

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


