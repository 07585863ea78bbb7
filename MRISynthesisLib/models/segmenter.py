"""Brain-tumour segmenter: MONAI ``SegResNet`` predicting the three BraTS regions.

The Refiner is trained with the Dice loss of a frozen segmenter, and the pipeline's
tumour-region maps come from it. Inputs are the four sequences in canonical order
(t1n, t1c, t2w, t2f), z-scored per sequence; outputs are three sigmoid channels, in order
whole tumour (WT), tumour core (TC), enhancing tumour (ET), as in MONAI's BraTS tutorial.

Labels follow BraTS 2023+: 1 necrotic tumour core, 2 peritumoral oedema, 3 enhancing
tumour (BraTS 2021 used 4 for enhancing tumour; :func:`label_to_regions` accepts it).
The region helpers work on numpy arrays and torch tensors alike.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence as SequenceT, Union

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.networks.nets import SegResNet
from torch import nn

from .config import ConfigDict

#: Output channels, in order.
REGIONS: tuple[str, ...] = ("WT", "TC", "ET")
NECROTIC, OEDEMA, ENHANCING = 1, 2, 3
_LEGACY_ENHANCING = 4  # BraTS 2021 and earlier

ArrayLike = Union[np.ndarray, torch.Tensor]


class SegmenterInputError(ValueError):
    """Inputs that the segmenter or the region helpers cannot use."""


@dataclasses.dataclass(frozen=True)
class SegmenterConfig(ConfigDict):
    """Hyper-parameters of the SegResNet segmenter (4 inputs, 3 region outputs)."""

    tuple_fields = ("blocks_down", "blocks_up")

    init_filters: int = 16
    blocks_down: tuple[int, ...] = (1, 2, 2, 4)
    blocks_up: tuple[int, ...] = (1, 1, 1)
    dropout_prob: float = 0.2

    def __post_init__(self) -> None:
        # from_dict may hand in lists (JSON); keep tuples so the config stays hashable.
        object.__setattr__(self, "blocks_down", tuple(int(b) for b in self.blocks_down))
        object.__setattr__(self, "blocks_up", tuple(int(b) for b in self.blocks_up))
        if self.init_filters < 8 or self.init_filters % 8:
            raise ValueError(
                f"SegmenterConfig.init_filters must be a multiple of 8 (group norm), got {self.init_filters}"
            )
        if len(self.blocks_up) != len(self.blocks_down) - 1:
            raise ValueError(
                f"SegmenterConfig: blocks_up {self.blocks_up} must have one entry fewer "
                f"than blocks_down {self.blocks_down}"
            )
        if not 0.0 <= self.dropout_prob < 1.0:
            raise ValueError(f"SegmenterConfig.dropout_prob must be in [0, 1), got {self.dropout_prob}")

    @classmethod
    def paper(cls) -> "SegmenterConfig":
        """MONAI's BraTS SegResNet: 16 initial filters, blocks (1,2,2,4) down and (1,1,1) up."""
        return cls()

    @classmethod
    def small(cls) -> "SegmenterConfig":
        """A light configuration for tests and CPU experiments."""
        return cls(init_filters=8)

    @property
    def downsample_factor(self) -> int:
        """Every spatial size given to the network must be a multiple of this."""
        return 2 ** (len(self.blocks_down) - 1)


def build_segmenter(config: Union[SegmenterConfig, None] = None) -> SegResNet:
    """A new SegResNet: 4 z-scored inputs in canonical order -> 3 region logits (WT, TC, ET)."""
    config = config or SegmenterConfig.paper()
    model = SegResNet(
        spatial_dims=3,
        init_filters=config.init_filters,
        in_channels=4,
        out_channels=len(REGIONS),
        dropout_prob=config.dropout_prob,
        blocks_down=config.blocks_down,
        blocks_up=config.blocks_up,
    )
    model.config = config  # checkpoints record the config (weights.save_checkpoint)
    return model


def _downsample_factor(model: nn.Module) -> int:
    """Downsampling factor of a MONAI SegResNet (1 for other models)."""
    blocks_down = getattr(model, "blocks_down", None)
    return 2 ** (len(blocks_down) - 1) if blocks_down else 1


def predict_region_probabilities(
    model: nn.Module,
    volume: torch.Tensor,
    roi_size: SequenceT[int] = (128, 128, 128),
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    device: Union[torch.device, str, None] = None,
    output_device: Union[torch.device, str, None] = None,
) -> torch.Tensor:
    """Sigmoid WT/TC/ET probabilities [B,3,D,H,W] for ``volume`` [B,4,D,H,W] of any size.

    Gaussian-weighted sliding windows of ``roi_size`` (each side a multiple of the network's
    downsampling factor, 8 for the presets); smaller volumes are zero-padded. Windows run on
    ``device`` (default: the model's) and the result is gathered on ``output_device``
    (default: ``volume``'s device).
    """
    if volume.ndim != 5 or volume.shape[1] != 4:
        raise SegmenterInputError(
            f"predict_region_probabilities: volume must be [B,4,D,H,W], got {list(volume.shape)}"
        )
    factor = _downsample_factor(model)
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != 3 or any(r <= 0 or r % factor for r in roi):
        raise SegmenterInputError(
            f"predict_region_probabilities: roi_size {list(roi_size)} must be 3 positive multiples of {factor}"
        )
    sw_device = torch.device(device) if device is not None else next(model.parameters()).device
    out_device = torch.device(output_device) if output_device is not None else volume.device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = sliding_window_inference(
                volume, roi, sw_batch_size, model, overlap=overlap, mode="gaussian",
                padding_mode="constant", cval=0.0, sw_device=sw_device, device=out_device,
            )
            probabilities = torch.sigmoid(logits)
    finally:
        model.train(was_training)
    if isinstance(probabilities, MetaTensor):
        probabilities = probabilities.as_tensor()
    return probabilities.clone()  # a normal tensor, editable outside inference mode


def _region_axis(shape: tuple[int, ...], who: str) -> int:
    """Axis holding the three regions: 0 for [3,...], 1 for [B,3,...]."""
    if len(shape) >= 1 and shape[0] == len(REGIONS) and len(shape) != 5:
        return 0
    if len(shape) >= 2 and shape[1] == len(REGIONS):
        return 1
    raise SegmenterInputError(f"{who}: expected regions as [3,...] or [B,3,D,H,W], got {list(shape)}")


def regions_to_label(regions: ArrayLike, threshold: float = 0.5) -> ArrayLike:
    """BraTS 2023 label map (uint8) from WT/TC/ET probabilities or masks.

    ``regions`` is [3,...] or [B,3,D,H,W] (numpy or torch); the result drops that axis and
    has the same array type. A region is on where its value exceeds ``threshold`` (boolean
    masks are used as they are). Nesting ET in TC in WT is enforced by precedence, as
    region-based nnU-Net does: ET -> 3, else TC -> 1 (necrotic core), else WT -> 2 (oedema),
    so a voxel called ET counts as TC and WT too.
    """
    axis = _region_axis(tuple(regions.shape), "regions_to_label")
    if isinstance(regions, torch.Tensor):
        on = regions if regions.dtype == torch.bool else regions > threshold
        wt, tc, et = on.unbind(axis)
        label = torch.zeros(wt.shape, dtype=torch.uint8, device=regions.device)
    else:
        array = np.asarray(regions)
        on = array if array.dtype == bool else array > threshold
        wt, tc, et = np.moveaxis(on, axis, 0)
        label = np.zeros(wt.shape, dtype=np.uint8)
    label[wt] = OEDEMA
    label[tc] = NECROTIC
    label[et] = ENHANCING
    return label


def label_to_regions(label: ArrayLike, axis: int = 0) -> ArrayLike:
    """Boolean WT/TC/ET masks stacked on ``axis`` from a BraTS label map (numpy or torch).

    WT = labels 1+2+3, TC = 1+3, ET = 3 (4, the BraTS 2021 enhancing label, counts as 3).
    ``axis=0`` turns [D,H,W] into [3,D,H,W]; ``axis=1`` turns [B,D,H,W] into [B,3,D,H,W].
    """
    if isinstance(label, torch.Tensor):
        if label.numel():
            _check_label_values(int(label.min()), int(label.max()))
        et = (label == ENHANCING) | (label == _LEGACY_ENHANCING)
        tc = et | (label == NECROTIC)
        wt = tc | (label == OEDEMA)
        return torch.stack([wt, tc, et], dim=axis)
    array = np.asarray(label)
    if array.size:
        _check_label_values(int(array.min()), int(array.max()))
    et = (array == ENHANCING) | (array == _LEGACY_ENHANCING)
    tc = et | (array == NECROTIC)
    wt = tc | (array == OEDEMA)
    return np.stack([wt, tc, et], axis=axis)


def _check_label_values(low: int, high: int) -> None:
    """Raise unless labels lie in 0..4 (BraTS 2023 uses 0..3, BraTS 2021 used 4 for ET)."""
    if low < 0 or high > _LEGACY_ENHANCING:
        raise SegmenterInputError(f"label_to_regions: labels must lie in 0..4, found values in {low}..{high}")
