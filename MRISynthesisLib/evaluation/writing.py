"""Writing one evaluation's files into a folder: ``evaluation.csv``, the ``evaluation.md`` summary
and the box plots."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence as TypingSequence

from .plots import save_boxplots
from .tables import rows_to_csv, summary_markdown

__all__ = ["write_evaluation"]


def write_evaluation(rows: list, folder: Path, model: str, segmenter: bool, refiner: bool,
                     notes: TypingSequence = ()) -> dict:
    """Write ``evaluation.csv``, ``evaluation.md`` and the box plots into ``folder``; returns the paths."""
    from ..core.io import write_text

    folder = Path(folder)
    paths = {"csv": write_text(rows_to_csv(rows), folder / "evaluation.csv"),
             "summary": write_text(summary_markdown(rows, model, segmenter, refiner, notes),
                                   folder / "evaluation.md")}
    for path in save_boxplots(rows, folder, refiner):
        paths[path.stem] = path
    return paths
