"""Scoring protocols: which set of image metrics scores a synthesis against the acquired image.

* ``brain`` (default): this project's metrics (:func:`~.volume.image_metrics`): each image scaled by
  its own brain 0.5/99.5 percentiles, SSIM averaged over the brain, tumour and healthy brain. Stricter:
  the background, most of a BraTS volume, does not count.
* ``brasyn``: the BraSyn challenge's scoring (:func:`~.brasyn.brasyn_metrics`, torchmetrics): whole
  volume, whole-volume percentile scaling, tumour and healthy region by multiplication with the label
  mask. The numbers to set beside the two-stage paper's Tables 1-2 and the BraSyn leaderboard.

Every front end (pipeline, ``mrisynth evaluate``/``validate``, the Slicer validation table) names a
protocol by one of :data:`PROTOCOLS` and reads its columns and description from here.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from .checks import MetricsError
from .names import BRASYN_METRICS, IMAGE_METRICS

__all__ = [
    "PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "PROTOCOL_DESCRIPTIONS",
    "check_protocol",
    "protocol_columns",
    "protocol_description",
    "main_ssim_key",
    "protocol_of_metrics",
    "protocol_provenance",
    "protocol_metrics",
]

#: The scoring protocols, by name.
PROTOCOLS: Tuple[str, ...] = ("brain", "brasyn")
#: The protocol used unless one is asked for.
DEFAULT_PROTOCOL = "brain"
#: One sentence per protocol for reports: how the numbers were made.
PROTOCOL_DESCRIPTIONS: Dict[str, str] = {
    "brain": "brain protocol (MRISynthesis): each image mapped to [0, 1] by its own brain 0.5/99.5 percentiles; "
             "SSIM averaged over the brain, the tumour region (label > 0) and the healthy rest; PSNR, NMSE and MAE "
             "over the brain",
    "brasyn": "BraSyn protocol (the paper and the BraSyn challenge): each volume clipped to its own whole-volume "
              "0.5/99.5 percentiles (low bound at least 0) and scaled to [0, 1]; torchmetrics SSIM (Gaussian 11, "
              "sigma 1.5), PSNR (data range 1) and MSE over the whole volume, and over the volumes multiplied by "
              "the tumour mask (label > 0) or by its complement (healthy)",
}
_COLUMNS: Dict[str, Tuple[str, ...]] = {"brain": IMAGE_METRICS, "brasyn": BRASYN_METRICS}
_MAIN_SSIM: Dict[str, str] = {"brain": "ssim", "brasyn": "ssim_whole"}


def check_protocol(protocol: object) -> str:
    """``protocol`` when it is one of :data:`PROTOCOLS`; otherwise a one-line :class:`MetricsError`."""
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise MetricsError(f"metrics protocol {protocol!r} is unknown; expected one of {', '.join(PROTOCOLS)}")
    return protocol


def protocol_columns(protocol: str) -> Tuple[str, ...]:
    """The metric keys ``protocol`` gives, in table order."""
    return _COLUMNS[check_protocol(protocol)]


def protocol_description(protocol: str) -> str:
    """How ``protocol``'s numbers are made, in one sentence (for reports)."""
    return PROTOCOL_DESCRIPTIONS[check_protocol(protocol)]


def main_ssim_key(protocol: str) -> str:
    """The headline SSIM of ``protocol`` (``ssim`` over the brain, ``ssim_whole`` for BraSyn)."""
    return _MAIN_SSIM[check_protocol(protocol)]


def protocol_of_metrics(metrics: Mapping) -> Optional[str]:
    """The protocol that made a metrics dict (read from its keys), or None for an empty or foreign one.

    Results carry numbers only (they cross the worker's process boundary as JSON numbers), so the
    protocol is recognised by the columns it gives.
    """
    keys = set(metrics)
    for protocol in PROTOCOLS:
        if _MAIN_SSIM[protocol] in keys and keys <= set(_COLUMNS[protocol]):
            return protocol
    return None


def protocol_provenance(protocol: str) -> Dict[str, str]:
    """What a report records about the scoring: the protocol and, for BraSyn, ``torchmetrics.__version__``."""
    out = {"metrics_protocol": check_protocol(protocol)}
    if protocol == "brasyn":
        from .brasyn import torchmetrics_version

        out["torchmetrics_version"] = torchmetrics_version()
    return out


def protocol_metrics(protocol: str, reference: np.ndarray, test: np.ndarray, brain_mask: np.ndarray,
                     tumour_mask: Optional[np.ndarray]) -> Dict[str, float]:
    """Scores of ``test`` (synthetic) against ``reference`` (acquired) under ``protocol``.

    ``brain``: exactly :func:`~.volume.image_metrics` (``brain_mask`` required; the tumour region is
    ``tumour_mask`` inside the brain). ``brasyn``: :func:`~.brasyn.brasyn_metrics` over the whole volume;
    ``brain_mask`` is not used (BraSyn scores every voxel), ``tumour_mask`` is the label > 0 region, and
    without it the tumour and healthy scores are NaN.
    """
    if check_protocol(protocol) == "brasyn":
        from .brasyn import brasyn_metrics

        return brasyn_metrics(reference, test, tumour_mask)
    from .volume import image_metrics

    return image_metrics(reference, test, brain_mask, tumour_mask)
