"""Writing one evaluation's files into a folder: ``evaluation.csv``, the ``evaluation.md`` summary,
the box plots and, with uncertainty maps, their reliability diagram."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence as TypingSequence

from .calibration import save_reliability_diagram
from .plots import save_boxplots
from .tables import rows_to_csv, summary_markdown

__all__ = ["write_evaluation"]


def write_evaluation(rows: list, folder: Path, model: str, segmenter: bool, refiner: bool,
                     notes: TypingSequence = (), segmenter_name: str = "the bundle's segmenter") -> dict:
    """Write ``evaluation.csv``, ``evaluation.md`` and the box plots into ``folder``; returns the paths.

    ``segmenter_name`` says in the summary whose Dice and pseudo-labels these are."""
    from ..core.io import write_text

    folder = Path(folder)
    paths = {"csv": write_text(rows_to_csv(rows), folder / "evaluation.csv"),
             "summary": write_text(summary_markdown(rows, model, segmenter, refiner, notes, segmenter_name),
                                   folder / "evaluation.md")}
    for path in save_boxplots(rows, folder, refiner):
        paths[path.stem] = path
    curves = reliability_curves(rows)
    if curves:  # with --uncertainty: the uncertainty map's reliability diagram
        paths["reliability"] = save_reliability_diagram(folder / "reliability.png", curves,
                                                        f"Reliability of the uncertainty map ({model})")
    return paths


def reliability_curves(rows: list) -> dict:
    """Per target: the reliability curve averaged over the cases (bin by bin), from the rows' ``reliability``."""
    import numpy as np

    by_target: dict = {}
    for row in rows:
        if row.get("reliability"):
            by_target.setdefault(row["target"], []).append(row["reliability"])
    curves = {}
    for target, found in by_target.items():
        length = min(len(curve[0]) for curve in found)
        curves[target] = tuple(np.mean([curve[axis][:length] for curve in found], axis=0).tolist() for axis in (0, 1))
    return curves
