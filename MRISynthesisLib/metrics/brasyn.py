"""The BraSyn challenge's image scores, computed as its public scoring scripts do, with torchmetrics.

Why a second set of scores: the project's own ("brain") metrics compare images inside the brain only;
the two-stage paper and the BraSyn leaderboard score the whole volume, so only these numbers can be
set beside theirs. The convention (facts of BraSyn's scripts, implemented here independently):

* each volume (synthetic and acquired separately) is clipped to its own 0.5/99.5 percentiles over
  every voxel, background included, the low bound raised to 0 when negative, and scaled to [0, 1]
  (:func:`~.normalisation.normalise_whole_volume`);
* SSIM: torchmetrics ``StructuralSimilarityIndexMeasure()`` with its defaults (11-voxel Gaussian
  window, sigma 1.5, data range from the images) on (1, 1, Z, Y, X) tensors, preds = synthetic,
  target = acquired, the SSIM map averaged over the whole volume;
* tumour / healthy: both normalised images multiplied by the tumour mask (label > 0) or by its
  complement, then scored over the whole volume like the whole images;
* PSNR: ``PeakSignalNoiseRatio(data_range=1.0)``; MSE: ``MeanSquaredError()``.

torchmetrics (and torch) are imported only when a score is computed, through
:func:`load_torchmetrics`, which turns an import failure into one line.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .checks import MetricsError, as_mask, image_pair
from .names import BRASYN_METRICS
from .normalisation import normalise_whole_volume

__all__ = ["TORCHMETRICS_REQUIREMENT", "load_torchmetrics", "torchmetrics_version", "brasyn_metrics"]

#: The torchmetrics release floor (pyproject.toml and the Slicer module's requirements.txt).
TORCHMETRICS_REQUIREMENT = "torchmetrics>=1.0"


def load_torchmetrics() -> Any:
    """The ``torchmetrics`` module, or a one-line :class:`MetricsError` saying why it cannot be imported.

    torchmetrics imports torchvision when it is installed; a torchvision built for another torch (a
    CUDA build beside a CPU torch, say) then fails inside that import with a long traceback. That is
    reported, not hidden: the line names the cause and the remedy.
    """
    try:
        import torchmetrics
    except ModuleNotFoundError as error:
        if error.name == "torchmetrics":
            raise MetricsError(f"the BraSyn protocol needs torchmetrics, which is not installed: "
                               f"pip install '{TORCHMETRICS_REQUIREMENT}'") from None
        raise MetricsError(f"torchmetrics cannot be imported: it needs the package {error.name!r}, which is "
                           "not installed") from None
    except Exception as error:  # noqa: BLE001 - any import-time failure becomes the one line below
        detail = " ".join(str(error).split())[:300] or type(error).__name__
        cause = ""
        if "torchvision" in detail.lower() or _torchvision_broken():
            cause = (" - the installed torchvision build cannot load with this torch (a build for another torch "
                     "or CUDA); install the torchvision that matches this torch, or uninstall torchvision")
        raise MetricsError(f"torchmetrics cannot be imported ({type(error).__name__}: {detail}){cause}") from None
    return torchmetrics


def _torchvision_broken() -> bool:
    """True when torchvision is installed but its own import fails (the usual cause of a failed torchmetrics)."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001
        return True
    return False


def torchmetrics_version() -> str:
    """``torchmetrics.__version__``: recorded with every set of BraSyn numbers (its SSIM changed across releases)."""
    return str(load_torchmetrics().__version__)


def _tensor(volume: np.ndarray) -> Any:
    """A 3D float32 array as the (1, 1, Z, Y, X) tensor torchmetrics scores in 3D."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]


def _scores(synthetic: np.ndarray, acquired: np.ndarray) -> Tuple[float, float, float]:
    """(SSIM, PSNR, MSE) of two normalised volumes by torchmetrics, preds = synthetic, target = acquired."""
    load_torchmetrics()
    import torch
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
    from torchmetrics.regression import MeanSquaredError

    preds, target = _tensor(synthetic), _tensor(acquired)
    with torch.no_grad():
        ssim = StructuralSimilarityIndexMeasure()(preds, target)
        psnr = PeakSignalNoiseRatio(data_range=1.0)(preds, target)
        mse = MeanSquaredError()(preds, target)
    return float(ssim), float(psnr), float(mse)


def brasyn_metrics(reference: np.ndarray, test: np.ndarray, tumour_mask: Optional[np.ndarray] = None
                   ) -> Dict[str, float]:
    """BraSyn's scores of ``test`` (synthetic) against ``reference`` (acquired): keys :data:`BRASYN_METRICS`.

    ``tumour_mask``: voxels with label > 0 (any non-zero voxel counts). Without it, ``*_tumour`` and
    ``*_healthy`` are NaN; with an empty one ``*_tumour`` is NaN and ``*_healthy`` scores the whole
    volume (its complement), as the challenge's multiplication would. Arrays need at least 11 voxels
    along every axis (the SSIM window).
    """
    acquired, synthetic, _ = image_pair(reference, test, None)
    if min(acquired.shape) < 11 or acquired.ndim != 3:
        raise MetricsError(f"reference: shape {acquired.shape} is not a 3D volume of at least 11 voxels along "
                           "every axis (the SSIM window of the BraSyn protocol)")
    acquired_01 = normalise_whole_volume(acquired)
    synthetic_01 = normalise_whole_volume(synthetic)
    scores: Dict[str, float] = dict.fromkeys(BRASYN_METRICS, math.nan)
    ssim, psnr, mse = _scores(synthetic_01, acquired_01)
    scores.update(ssim_whole=ssim, psnr_whole=psnr, mse_whole=mse)
    if tumour_mask is None:
        return scores
    tumour = as_mask("tumour_mask", tumour_mask, acquired.shape).astype(np.float32)
    regions = {"healthy": 1.0 - tumour}
    if tumour.any():
        regions["tumour"] = tumour
    for name, weight in regions.items():
        ssim, psnr, mse = _scores(synthetic_01 * weight, acquired_01 * weight)
        scores.update({f"ssim_{name}": ssim, f"psnr_{name}": psnr, f"mse_{name}": mse})
    return scores
