"""The evaluation's rows (one per case x target x stage) and the vocabulary its tables and figures
share: the stages and their names, the paper's target and region order, and picking values out."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from ..metrics import SEGMENTATION_METRICS
from ..sequences import Sequence

__all__ = [
    "PAPER_ORDER",
    "PAPER_NAMES",
    "PAPER_REGIONS",
    "STAGE_NAMES",
    "REFERENCE_TARGET",
    "PSEUDO_SEGMENTATION_METRICS",
    "RUN_COLUMNS",
    "reported_stages",
    "has_segmentation",
    "select_rows",
    "finite_values",
]

#: Targets in the paper's column order.
PAPER_ORDER: Tuple[Sequence, ...] = (Sequence.T1N, Sequence.T2W, Sequence.T2F, Sequence.T1C)
#: The paper's names for the targets.
PAPER_NAMES: Dict[Sequence, str] = {Sequence.T1N: "T1", Sequence.T2W: "T2", Sequence.T2F: "FLAIR",
                                    Sequence.T1C: "T1ce"}
#: Regions in the paper's order (Table 3).
PAPER_REGIONS: Tuple[str, ...] = ("WT", "ET", "TC")
#: Row stages and how tables and legends name them.
STAGE_NAMES: Dict[str, str] = {"stage1": "HF-GAN + IE (mean) [stage 1]", "final": "+ Refiner",
                               "acquired": "all four acquired (reference)"}
#: ``target`` of the reference row (the segmenter on all four acquired sequences).
REFERENCE_TARGET = "none"
#: Dice/HD95 of a completed set against the pseudo-label (the segmenter on the four acquired sequences),
#: the paper's Table 3 protocol for cases without a label map.
PSEUDO_SEGMENTATION_METRICS: Tuple[str, ...] = tuple(f"pseudo_{key}" for key in SEGMENTATION_METRICS)
#: How a row was made: where the tumour mask came from (``truth``: the label map, ``pseudo``: the
#: pseudo-label, ``none``), the intensity-encoding setting (``mean``, ``2sigma``, ``gt``) and its value.
RUN_COLUMNS: Tuple[str, ...] = ("label_source", "intensity", "intensity_value")


def reported_stages(refiner: bool) -> Tuple[str, ...]:
    """The synthesis stages a bundle has rows for: stage 1, and the final result with a Refiner."""
    return ("stage1", "final") if refiner else ("stage1",)


def has_segmentation(rows: list) -> bool:
    """True when the rows carry Dice/HD95 (the bundle had a segmenter)."""
    return any(row.get("dice_WT") is not None for row in rows)


def select_rows(rows: list, stage: str, target: Optional[str] = None) -> list:
    """The rows of ``stage`` (and of ``target`` when given)."""
    return [r for r in rows if r["stage"] == stage and (target is None or r["target"] == target)]


def finite_values(values: Iterable) -> np.ndarray:
    """The finite numbers among ``values`` (None, NaN and inf left out), as a float array."""
    array = np.array([v for v in values if v is not None], dtype=float)
    return array[np.isfinite(array)]
