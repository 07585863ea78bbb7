"""Stage 2 of the two-stage method: the 3D *Refiner* (BraSyn 2024, section 2.2, appendix A.2).

The Refiner sharpens the stacked stage-1 volume of the missing (target) sequence using the
3D context of the sequences that were acquired:

1. **Encoders.** One small 3D U-Net per sequence (MONAI ``BasicUNet``, the classic
   two-convolutions-per-level U-Net, ``channels`` features at every level). The synthetic
   volume goes through the encoder of its own sequence, each acquired volume through its own.
2. **Element-wise cross-attention.** Features ``[C, D, H, W]`` are read as ``[M, C]``
   (``M = D*H*W``) and layer-normed over channels; ``Q`` comes from the synthetic features,
   ``K`` and ``V`` from one acquired sequence's features, all by linear projection. Then
   ``A = exp(-|Q - K|) * V``, ``F' = F + A`` and ``F'' = F' + FF(F')`` with ``FF`` two 1x1x1
   convolutions. This is applied once per acquired sequence, one after the other, always in
   the canonical order of :data:`MRISynthesisLib.sequences.SEQUENCES` (t1n, t1c, t2w, t2f).
3. **Decoder.** A few 3x3x3 convolutions (instance norm, LeakyReLU) restore consistency between
   neighbouring voxels; a final 1x1x1 convolution maps to one channel, which is *added* to the
   stage-1 volume.

Design choices not fixed by the paper:

* Every ordered (target, source) pair has its own cross-attention block (layer norms, Q/K/V
  projections, feed-forward): 12 small blocks. The block used for a step depends only on
  which two sequences meet, never on the step's position, so one model serves every target
  and any one, two or three acquired sequences.
* The last 1x1x1 convolution starts at zero, so an untrained Refiner returns its stage-1 input
  exactly: a stage-1-only pipeline is exact and training starts from the identity.
* The U-Net downsamples four times, so every spatial size given to :class:`Refiner` must be a
  multiple of :attr:`RefinerConfig.downsample_factor` (16), with at least one side of 32 or
  more (instance norm needs more than one bottleneck voxel). Whole volumes of any size go
  through :func:`refine_volume`, whose sliding-window ROI respects this.

All volumes are z-scored per sequence over non-zero (brain) voxels, background 0.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Sequence as SequenceT, Union

import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.networks.blocks import Convolution
from monai.networks.nets import BasicUNet
from torch import nn

from MRISynthesisLib.models.config import ConfigDict
from MRISynthesisLib.sequences import SEQUENCES, Sequence

#: A sequence given as its canonical index (0..3) or as a :class:`Sequence`.
SequenceLike = Union[int, Sequence]

NUM_SEQUENCES = len(SEQUENCES)
_UNET_DOWNSAMPLINGS = 4  # BasicUNet always has four pooling steps
_ACT = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True})
_NORM = ("instance", {"affine": True})


class RefinerInputError(ValueError):
    """Inputs that the Refiner cannot use (wrong shapes, sequences or sizes)."""


@dataclasses.dataclass(frozen=True)
class RefinerConfig(ConfigDict):
    """Hyper-parameters of :class:`Refiner`.

    ``channels`` is the width of every encoder level and of the Q/K/V and output features
    (64 in the paper); ``ff_channels`` the hidden width of the 1x1x1 feed-forward
    (``None``: same as ``channels``); ``decoder_layers`` the number of 3x3x3 convolutions
    before the final 1x1x1 convolution.
    """

    channels: int = 64
    ff_channels: Union[int, None] = None
    decoder_layers: int = 2

    def __post_init__(self) -> None:
        if self.channels < 2 or self.channels % 2:
            raise ValueError(f"RefinerConfig.channels must be an even number >= 2, got {self.channels}")
        if self.ff_channels is not None and self.ff_channels < 1:
            raise ValueError(f"RefinerConfig.ff_channels must be >= 1 or None, got {self.ff_channels}")
        if self.decoder_layers < 0:
            raise ValueError(f"RefinerConfig.decoder_layers must be >= 0, got {self.decoder_layers}")

    @classmethod
    def paper(cls) -> "RefinerConfig":
        """The BraSyn 2024 configuration: 64 channels everywhere."""
        return cls(channels=64)

    @classmethod
    def small(cls) -> "RefinerConfig":
        """A light configuration for the CPU demo model and tests (8 channels: ~1/60 of the paper's cost)."""
        return cls(channels=8)

    @property
    def hidden_ff_channels(self) -> int:
        """Hidden width of the feed-forward layer."""
        return self.channels if self.ff_channels is None else self.ff_channels

    @property
    def downsample_factor(self) -> int:
        """Every spatial size given to :class:`Refiner` must be a multiple of this."""
        return 2 ** _UNET_DOWNSAMPLINGS


def sequence_index(value: SequenceLike) -> int:
    """Canonical index (0..3) of a sequence given as an index or a :class:`Sequence`."""
    if isinstance(value, Sequence):
        return SEQUENCES.index(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < NUM_SEQUENCES:
        raise RefinerInputError(
            f"Refiner: sequence {value!r} is not an index 0..{NUM_SEQUENCES - 1} or a Sequence"
        )
    return int(value)


def canonical_order(target: SequenceLike, available: Iterable[SequenceLike]) -> list[int]:
    """Check ``target``/``available`` and return the acquired sequences in canonical order."""
    target_index = sequence_index(target)
    indices = [sequence_index(a) for a in available]
    if not indices:
        raise RefinerInputError("Refiner: no available sequence given; at least one is needed")
    if len(set(indices)) != len(indices):
        raise RefinerInputError(f"Refiner: available sequences {indices} contain duplicates")
    if target_index in indices:
        name = SEQUENCES[target_index].value
        raise RefinerInputError(f"Refiner: target {name} is also listed as available")
    return sorted(indices)


def _pair_key(target: int, source: int) -> str:
    """Name of the cross-attention block for one (target, source) pair, e.g. ``t2f_from_t1n``."""
    return f"{SEQUENCES[target].value}_from_{SEQUENCES[source].value}"


class ElementwiseCrossAttention(nn.Module):
    """One refinement step: ``F' = F + exp(-|Q-K|) * V``, then ``F'' = F' + FF(F')``.

    ``Q`` is projected from the layer-normed synthetic features, ``K`` and ``V`` from the
    layer-normed features of one acquired sequence. Every voxel is treated on its own.
    """

    def __init__(self, channels: int, ff_channels: int) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(channels)
        self.norm_source = nn.LayerNorm(channels)
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.feed_forward = nn.Sequential(
            nn.Conv3d(channels, ff_channels, kernel_size=1),
            nn.GELU(),
            nn.Conv3d(ff_channels, channels, kernel_size=1),
        )

    def forward(self, synthetic: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Refine ``synthetic`` [B,C,D,H,W] with ``source`` [B,C,D,H,W]; same shape out."""
        # Channels last = the paper's [M, C] view; Linear on it is a per-voxel projection.
        syn_last = self.norm_query(synthetic.movedim(1, -1))
        src_last = self.norm_source(source.movedim(1, -1))
        q = self.query(syn_last)
        k = self.key(src_last)
        v = self.value(src_last)
        attention = torch.exp(-torch.abs(q - k)) * v
        refined = synthetic + attention.movedim(-1, 1)
        return refined + self.feed_forward(refined)


class Refiner(nn.Module):
    """The 3D Refiner: stage-1 volume + acquired volumes -> refined volume (see module doc)."""

    #: Without gradients, cross-attention runs on slabs of this many slices, in place (0: at
    #: once). Each voxel is attended on its own, so the numbers are the same while the
    #: temporaries cover a slab, not the window: the paper refiner's 128^3 peak drops from
    #: ~12.5 to ~9 feature volumes of 0.5 GiB. Inference sets it (``Stage2Options.slab``).
    attention_slab: int = 0

    def __init__(self, config: Union[RefinerConfig, None] = None) -> None:
        super().__init__()
        self.config = config or RefinerConfig.paper()
        c = self.config.channels
        self.encoders = nn.ModuleDict({seq.value: self._make_encoder(c) for seq in SEQUENCES})
        self.attention = nn.ModuleDict(
            {
                _pair_key(t, s): ElementwiseCrossAttention(c, self.config.hidden_ff_channels)
                for t in range(NUM_SEQUENCES)
                for s in range(NUM_SEQUENCES)
                if t != s
            }
        )
        layers: list[nn.Module] = [
            Convolution(3, c, c, kernel_size=3, act=_ACT, norm=_NORM)
            for _ in range(self.config.decoder_layers)
        ]
        self.decoder = nn.Sequential(*layers)
        self.head = nn.Conv3d(c, 1, kernel_size=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @staticmethod
    def _make_encoder(channels: int) -> nn.Module:
        """A simple 3D U-Net with ``channels`` features at every level and as output."""
        return BasicUNet(
            spatial_dims=3, in_channels=1, out_channels=channels, features=(channels,) * 6,
            act=_ACT, norm=_NORM,
        )

    def forward(
        self,
        stage1: torch.Tensor,
        inputs: torch.Tensor,
        target: SequenceLike,
        available: Iterable[SequenceLike],
    ) -> torch.Tensor:
        """Refine ``stage1`` [B,1,D,H,W] of sequence ``target`` using ``inputs`` [B,4,D,H,W].

        ``inputs`` holds the four sequences in canonical order; only the channels listed in
        ``available`` (1 to 3 sequences, never ``target``) are read. Cross-attention runs in
        canonical order whatever the order of ``available``. Returns [B,1,D,H,W].
        """
        return self.forward_in_order(stage1, inputs, target, canonical_order(target, available))

    def forward_in_order(
        self, stage1: torch.Tensor, inputs: torch.Tensor, target: SequenceLike, order: SequenceT[SequenceLike]
    ) -> torch.Tensor:
        """Like :meth:`forward` but applies cross-attention in exactly the ``order`` given.

        For ablations and tests; the trained model expects :meth:`forward`'s canonical order.
        """
        target_index = sequence_index(target)
        sources = [sequence_index(s) for s in order]
        canonical_order(target_index, sources)  # same checks, order kept as given
        self._check_shapes(stage1, inputs)
        features = self.encoders[SEQUENCES[target_index].value](stage1)
        for source in sources:
            source_features = self.encoders[SEQUENCES[source].value](inputs[:, source : source + 1])
            features = self._attend(self.attention[_pair_key(target_index, source)], features, source_features)
            del source_features
        return stage1 + self.head(self.decoder(features))

    def _attend(self, block: nn.Module, features: torch.Tensor, source_features: torch.Tensor) -> torch.Tensor:
        """One cross-attention step; slab by slab into ``features`` when :attr:`attention_slab` allows."""
        slab = int(self.attention_slab)
        if slab <= 0 or torch.is_grad_enabled() or features.shape[2] <= slab:
            return block(features, source_features)
        for start in range(0, features.shape[2], slab):
            part = slice(start, start + slab)
            refined = block(features[:, :, part], source_features[:, :, part])
            if refined.dtype != features.dtype:  # autocast may change it: follow, as the whole step would
                features = features.to(refined.dtype)
            features[:, :, part] = refined
        return features

    def _check_shapes(self, stage1: torch.Tensor, inputs: torch.Tensor) -> None:
        """Raise :class:`RefinerInputError` unless the two tensors fit the model."""
        _check_volume_shapes(stage1, inputs, "Refiner")
        _check_spatial_size(stage1.shape[2:], self.config.downsample_factor, "Refiner: spatial size")


def _check_volume_shapes(stage1: torch.Tensor, inputs: torch.Tensor, who: str) -> None:
    """Raise :class:`RefinerInputError` unless ``stage1`` is [B,1,...] and ``inputs`` [B,4,...] alike."""
    if stage1.ndim != 5 or stage1.shape[1] != 1:
        raise RefinerInputError(f"{who}: stage1 must be [B,1,D,H,W], got {list(stage1.shape)}")
    if inputs.ndim != 5 or inputs.shape[1] != NUM_SEQUENCES:
        raise RefinerInputError(f"{who}: inputs must be [B,{NUM_SEQUENCES},D,H,W], got {list(inputs.shape)}")
    if inputs.shape[0] != stage1.shape[0] or inputs.shape[2:] != stage1.shape[2:]:
        raise RefinerInputError(
            f"{who}: stage1 {list(stage1.shape)} and inputs {list(inputs.shape)} differ in batch or size"
        )


def build_refiner(config: Union[RefinerConfig, None] = None) -> Refiner:
    """A new, untrained Refiner (the identity until trained)."""
    return Refiner(config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _window_count(spatial: SequenceT[int], roi: SequenceT[int], overlap: float) -> int:
    """How many windows MONAI's sliding window visits for one volume (for progress)."""
    total = 1
    for size, r in zip(spatial, roi):
        size = max(size, r)  # smaller volumes are padded up to the ROI
        step = r if size == r else max(int(r * (1 - overlap)), 1)
        total *= math.ceil((size - r) / step) + 1
    return total


def _check_spatial_size(size: SequenceT[int], factor: int, what: str) -> None:
    """Raise unless ``size`` is 3 positive multiples of ``factor`` whose U-Net bottleneck has >1 voxel.

    Instance norm needs more than one voxel, so e.g. 16^3 is too small but 16x16x32 is fine.
    """
    size = [int(s) for s in size]
    if len(size) != 3 or any(s <= 0 or s % factor for s in size):
        raise RefinerInputError(
            f"{what} {size} must be 3 positive multiples of {factor}; use refine_volume for whole volumes"
        )
    if math.prod(s // factor for s in size) < 2:
        raise RefinerInputError(f"{what} {size} is too small: one side must be at least {2 * factor}")


def refine_volume(
    refiner: Refiner,
    stage1: torch.Tensor,
    inputs: torch.Tensor,
    target: SequenceLike,
    available: Iterable[SequenceLike],
    roi_size: SequenceT[int] = (128, 128, 128),
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    device: Union[torch.device, str, None] = None,
    output_device: Union[torch.device, str, None] = None,
    progress: Union[Callable[[float], None], None] = None,
) -> torch.Tensor:
    """Refine a whole volume of any size with Gaussian-weighted sliding windows.

    ``stage1`` [B,1,D,H,W] and ``inputs`` [B,4,D,H,W] are z-scored (background 0). Volumes
    smaller than ``roi_size`` are zero-padded; each ROI side must be a multiple of
    ``refiner.config.downsample_factor`` (16) and one side at least twice that. Windows run
    on ``device`` (default: the refiner's device) while the whole-volume result is
    accumulated on ``output_device`` (default: ``stage1``'s device), so a CPU volume refined
    on a GPU keeps GPU memory to one window batch. ``progress(fraction)`` is called after
    every window batch. Returns [B,1,D,H,W], a plain tensor on ``output_device`` that can be
    edited in place.
    """
    order = canonical_order(target, available)
    roi = tuple(int(r) for r in roi_size)
    _check_spatial_size(roi, refiner.config.downsample_factor, "refine_volume: roi_size")
    _check_volume_shapes(stage1, inputs, "refine_volume")
    sw_device = torch.device(device) if device is not None else next(refiner.parameters()).device
    out_device = torch.device(output_device) if output_device is not None else stage1.device
    total = _window_count(stage1.shape[2:], roi, overlap) * stage1.shape[0]
    done = [0]

    def predictor(window: torch.Tensor) -> torch.Tensor:
        out = refiner(window[:, :1], window[:, 1:], target, order)
        done[0] += window.shape[0]
        if progress is not None:
            progress(min(done[0] / total, 1.0))
        return out

    was_training = refiner.training
    refiner.eval()
    try:
        with torch.inference_mode():
            joined = torch.cat([stage1, inputs], dim=1)
            result = sliding_window_inference(
                joined, roi, sw_batch_size, predictor, overlap=overlap, mode="gaussian",
                padding_mode="constant", cval=0.0, sw_device=sw_device, device=out_device,
            )
    finally:
        refiner.train(was_training)
    if progress is not None:
        progress(1.0)
    return _plain_tensor(result)


def _plain_tensor(result: Any) -> torch.Tensor:
    """A normal tensor (not MONAI MetaTensor, not an inference tensor) that callers may edit in place."""
    if isinstance(result, MetaTensor):
        result = result.as_tensor()
    return result.clone()
