"""The one table of metric names: the keys results, reports and CSV files use, and their titles.

Evaluation tables, the ``validate`` tables, the reports and the Slicer metrics table all read
their columns from here, so a metric is named the same way everywhere.
"""
from __future__ import annotations

from typing import Dict, Tuple

__all__ = ["IMAGE_METRICS", "BRASYN_METRICS", "SEGMENTATION_METRICS", "METRIC_TITLES"]

#: Image metrics of one synthetic volume against the acquired one (:func:`image_metrics` keys).
IMAGE_METRICS: Tuple[str, ...] = ("ssim", "ssim_tumour", "ssim_healthy", "psnr", "nmse", "mae", "ssim_volume")
#: BraSyn's image scores (:func:`~.brasyn.brasyn_metrics` keys): whole volume, tumour and healthy region.
BRASYN_METRICS: Tuple[str, ...] = ("ssim_whole", "ssim_tumour", "ssim_healthy", "psnr_whole", "psnr_tumour",
                                   "psnr_healthy", "mse_whole", "mse_tumour", "mse_healthy")
#: Segmentation metrics of the completed set per BraTS region.
SEGMENTATION_METRICS: Tuple[str, ...] = ("dice_WT", "dice_TC", "dice_ET", "hd95_WT", "hd95_TC", "hd95_ET")
#: Column titles for people; a key without a title is shown as it is.
METRIC_TITLES: Dict[str, str] = {
    "ssim": "SSIM", "ssim_tumour": "SSIM tumour", "ssim_healthy": "SSIM healthy", "psnr": "PSNR (dB)",
    "nmse": "NMSE", "mae": "MAE", "ssim_volume": "SSIM volume",
    "ssim_whole": "SSIM whole", "psnr_whole": "PSNR whole (dB)", "psnr_tumour": "PSNR tumour (dB)",
    "psnr_healthy": "PSNR healthy (dB)", "mse_whole": "MSE whole", "mse_tumour": "MSE tumour",
    "mse_healthy": "MSE healthy",
}
