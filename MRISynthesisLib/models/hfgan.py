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
from torch import nn

from ..sequences import INTENSITY_PRIORS, Sequence, parse_sequence  # INTENSITY_PRIORS re-exported
from .hfgan_blocks import ConvDecoder, HybridFusionEncoder, ModalityInfuser
from .hfgan_config import (  # re-exported: what users of the generator need with it
    MISSING_VALUE,
    NUM_INPUTS,
    REFERENCE_MODALITY_ORDER,
    HFGANConfig,
    HFGANError,
    StateDictMismatchError,
)

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



Availability = Union[torch.Tensor, SequenceType[SequenceType[int]]]
#: The target channel: one per item ([B] long tensor) or one int for the whole batch.
TargetChannel = Union[torch.Tensor, int]
#: The intensity-encoding value: one per item ([B] float tensor) or one float for the whole batch;
#: ``None`` for a generator built without intensity encoding (the paper's HF-GAN ablation rows).
IntensityCode = Union[torch.Tensor, float, None]


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
    def uses_intensity_code(self) -> bool:
        """Whether the generator is conditioned on a target intensity (built with intensity encoding)."""
        return bool(self.config.intensity_encoding)

    @property
    def modality_order(self) -> Tuple[Sequence, ...]:
        """Sequence of each input channel."""
        return tuple(Sequence(s) for s in self.config.modality_order)

    def channel_of(self, sequence: Union[Sequence, str]) -> int:
        """Input channel index of a sequence."""
        return self.modality_order.index(parse_sequence(sequence))

    def forward(self, x: torch.Tensor, available: Availability, target: TargetChannel,
                intensity: IntensityCode) -> torch.Tensor:
        """Synthesise channel ``target`` from the ``available`` channels of ``x``.

        ``x``: [B, 4, H, W] in ``modality_order``; ``available``: per item a list of channel
        indices (or a bool [B, 4] tensor); ``target``: [B] long (or an int for all);
        ``intensity``: [B] float (or a float for all); ``None`` only for a generator without
        intensity encoding (which ignores any value). Returns [B, 1, H, W].
        """
        return self.forward_with_features(x, available, target, intensity)[0]

    def forward_with_features(self, x: torch.Tensor, available: Availability, target: TargetChannel,
                              intensity: IntensityCode) -> Tuple[torch.Tensor, torch.Tensor]:
        """Output and the fused bottleneck features (for the cosine feature-consistency loss)."""
        if intensity is None:
            if self.uses_intensity_code:
                raise HFGANError("HFGANGenerator: this generator has intensity encoding and needs an intensity code")
            intensity = 0.0  # a placeholder the condition never reads
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
