"""Metrics the synthesis is judged by: image similarity and BraTS tumour segmentation.

Image similarity (two-stage paper, Tables 1, 2 and 4; BraSyn challenge): SSIM, PSNR, NMSE,
MAE and MSE over the whole volume or restricted to a mask (tumour region, healthy region).
Segmentation (Tables 3 and 4): Dice and HD95 of the BraTS regions WT, TC and ET.

All inputs are numpy arrays in the same axis order (for SimpleITK images that is z, y, x,
as ``sitk.GetArrayFromImage`` gives). Masks are boolean arrays of the same shape; any other
dtype is read as ``mask != 0``. torch and MONAI are imported only by the segmentation
functions, so importing this package stays cheap. The ground of the project: it imports
nothing of it. Modules: :mod:`.checks` (input checks), :mod:`.image` (SSIM and error metrics),
:mod:`.normalisation` (percentile scalings), :mod:`.volume` (one volume's scores),
:mod:`.segmentation` (BraTS regions, Dice, HD95), :mod:`.names` (the metric-name table),
:mod:`.brasyn` (the BraSyn challenge's scores, torchmetrics) and :mod:`.protocols` (the scoring
protocols ``brain`` and ``brasyn``: which of those sets scores a synthesis).
"""
from __future__ import annotations

from .checks import MetricsError
from .image import SSIM_K1, SSIM_K2, UNIFORM_WINDOW_SIZE, mae, mse, nmse, psnr, ssim, ssim_map
from .names import BRASYN_METRICS, IMAGE_METRICS, METRIC_TITLES, SEGMENTATION_METRICS
from .protocols import (
    DEFAULT_PROTOCOL,
    PROTOCOLS,
    check_protocol,
    protocol_columns,
    protocol_description,
    protocol_metrics,
    protocol_provenance,
)
from .normalisation import normalise_for_metrics, normalise_whole_volume
from .segmentation import (
    BRATS_HD95_PENALTY,
    BRATS_LABELS,
    BRATS_REGIONS,
    brats_regions,
    dice,
    hd95,
    segmentation_metrics,
)
from .volume import enhancement_contrast, image_metrics, region_psnr, volume_ssim

__all__ = [
    "MetricsError",
    "IMAGE_METRICS",
    "BRASYN_METRICS",
    "PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "check_protocol",
    "protocol_columns",
    "protocol_description",
    "protocol_metrics",
    "protocol_provenance",
    "SEGMENTATION_METRICS",
    "METRIC_TITLES",
    "SSIM_K1",
    "SSIM_K2",
    "UNIFORM_WINDOW_SIZE",
    "BRATS_HD95_PENALTY",
    "BRATS_LABELS",
    "BRATS_REGIONS",
    "ssim_map",
    "ssim",
    "psnr",
    "nmse",
    "mae",
    "mse",
    "normalise_for_metrics",
    "normalise_whole_volume",
    "volume_ssim",
    "image_metrics",
    "region_psnr",
    "enhancement_contrast",
    "brats_regions",
    "dice",
    "hd95",
    "segmentation_metrics",
]
