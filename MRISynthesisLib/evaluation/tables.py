"""The evaluation's tables: the one CSV writer, the summary Markdown in the layout of the paper's
Tables 1-3, the console summary, and the per-target metrics table of ``mrisynth validate``.

Values are shown as mean ± sample std over the finite values; the paper's Avg. column is the
mean over cases of each case's mean over targets.
"""
from __future__ import annotations

import csv
import io as text_io
import math
from typing import Iterable, Optional, Sequence as TypingSequence

import numpy as np

from ..metrics import IMAGE_METRICS, SEGMENTATION_METRICS
from .rows import (PAPER_NAMES, PAPER_ORDER, PAPER_REGIONS, STAGE_NAMES, finite_values, has_segmentation,
                   reported_stages, select_rows)

__all__ = ["rows_to_csv", "summary_markdown", "console_summary", "metrics_table_markdown"]


# --------------------------------------------------------------------------- CSV


def _evaluation_columns(rows: list) -> list:
    """The evaluation CSV's columns: case, target, stage, the image metrics and, with a segmenter, Dice/HD95."""
    columns = ["case", "target", "stage", *IMAGE_METRICS]
    if has_segmentation(rows):
        columns += list(SEGMENTATION_METRICS)
    return columns


def rows_to_csv(rows: list, columns: Optional[list] = None) -> str:
    """CSV text of metric rows, one per line; empty cells where a value does not apply.

    ``columns`` default to the evaluation's (case, target, stage, the image metrics and, when
    present, Dice/HD95); the validation table and the training metrics pass their own keys.
    """
    if not rows:
        return ""
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or _evaluation_columns(rows), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


# --------------------------------------------------------------------------- summary Markdown


def _mean_std(values: Iterable, digits: int = 4) -> str:
    """``mean ± std`` (sample std over the finite values), ``n/a`` when there are none."""
    array = finite_values(values)
    if array.size == 0:
        return "n/a"
    if array.size == 1:
        return f"{array[0]:.{digits}f}"
    return f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f}"


def _per_case_average(rows: list, stage: str, key: str) -> list:
    """Per case: the mean of ``key`` over the targets (the paper's Avg. column)."""
    averages = []
    for case in dict.fromkeys(r["case"] for r in rows):
        values = finite_values(r.get(key) for r in select_rows(rows, stage) if r["case"] == case)
        if values.size:
            averages.append(float(values.mean()))
    return averages


def _target_table(rows: list, key: str, stages: TypingSequence, digits: int = 4) -> str:
    """Method x target table of ``key`` with the paper's Avg. column."""
    header = "| Method | " + " | ".join(PAPER_NAMES[s] for s in PAPER_ORDER) + " | Avg. |\n"
    lines = [header + "|---|" + "---|" * (len(PAPER_ORDER) + 1)]
    for stage in stages:
        cells = [_mean_std((r.get(key) for r in select_rows(rows, stage, s.value)), digits) for s in PAPER_ORDER]
        cells.append(_mean_std(_per_case_average(rows, stage, key), digits))
        lines.append(f"| {STAGE_NAMES[stage]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _region_table(rows: list, prefix: str, stages: TypingSequence, average: bool, digits: int = 4) -> str:
    """Method x region table of ``prefix``_WT/ET/TC (over every case x target row of a stage)."""
    columns = list(PAPER_REGIONS) + (["Avg"] if average else [])
    lines = ["| Method | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns)]
    for stage in stages:
        selected = select_rows(rows, stage)
        if not selected:
            continue
        cells = [_mean_std((r.get(f"{prefix}_{region}") for r in selected), digits) for region in PAPER_REGIONS]
        if average:
            cells.append(_mean_std([np.mean([r[f"{prefix}_{g}"] for g in PAPER_REGIONS]) for r in selected
                                    if all(r.get(f"{prefix}_{g}") is not None for g in PAPER_REGIONS)], digits))
        lines.append(f"| {STAGE_NAMES[stage]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _dice_by_target(rows: list, stages: TypingSequence) -> str:
    header = "| Method | Region | " + " | ".join(PAPER_NAMES[s] for s in PAPER_ORDER) + " |\n"
    lines = [header + "|---|---|" + "---|" * len(PAPER_ORDER)]
    for stage in stages:
        for region in PAPER_REGIONS:
            cells = [_mean_std(r.get(f"dice_{region}") for r in select_rows(rows, stage, s.value)) for s in PAPER_ORDER]
            lines.append(f"| {STAGE_NAMES[stage]} | {region} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(rows: list, model: str, segmenter: bool, refiner: bool, notes: TypingSequence = ()) -> str:
    """The evaluation summary in the paper's layout (Tables 1-3), plus PSNR, NMSE and HD95."""
    cases = list(dict.fromkeys(r["case"] for r in rows))
    stages = reported_stages(refiner)
    parts = [
        f"# Evaluation of {model} (MRISynthesis)\n",
        f"{len(cases)} case(s): {', '.join(cases)}. Each target is synthesised from the other three "
        "acquired sequences and compared with the acquired one. Images are mapped to [0, 1] by their own "
        "brain 0.5/99.5 percentiles; SSIM is averaged over the brain, the tumour region (label > 0) and the "
        "healthy rest. Values are mean ± sample std over cases (Avg.: of the per-case mean over targets); "
        "non-finite values (empty regions) are left out.\n",
    ]
    if not refiner:
        parts.append("The bundle has no Refiner: only stage 1 is reported.\n")
    parts += [f"{note}\n" for note in notes]
    parts += ["## Table 1. SSIM-Whole\n", "Over the brain (this project's headline number):\n",
              _target_table(rows, "ssim", stages),
              "Over the whole volume, background included, each image scaled by its own whole-volume "
              "0.5/99.5 percentiles: the way the paper and BraSyn score SSIM-Whole, far more lenient because "
              "the background scores 1. Compare this one with the paper's Table 1.\n",
              _target_table(rows, "ssim_volume", stages)]
    parts += ["## Table 2. SSIM by region\n", "SSIM-Tumour region\n", _target_table(rows, "ssim_tumour", stages),
              "SSIM-Healthy region\n", _target_table(rows, "ssim_healthy", stages)]
    if segmenter:
        seg_stages = stages + ("acquired",)
        parts += [
            "## Table 3. Dice score\n",
            "The bundle's segmenter on the completed set (three acquired sequences + the synthetic target), "
            "against the label map; mean ± std over case x target. The last row segments the four acquired "
            "sequences (upper bound).\n",
            _region_table(rows, "dice", seg_stages, average=True),
            "Dice by target\n", _dice_by_target(rows, stages),
            "HD95 (mm)\n", _region_table(rows, "hd95", seg_stages, average=False, digits=2),
        ]
    else:
        parts.append("## Table 3. Dice score\n\nSkipped: the bundle has no segmenter.\n")
    parts += ["## PSNR (dB)\n", _target_table(rows, "psnr", stages, digits=2),
              "## NMSE\n", _target_table(rows, "nmse", stages), "## MAE\n", _target_table(rows, "mae", stages)]
    return "\n".join(parts)


def console_summary(rows: list, segmenter: bool, refiner: bool) -> str:
    """The headline tables for the terminal: SSIM-Whole per target and, with a segmenter, Dice."""
    stages = reported_stages(refiner)
    text = "SSIM-Whole (mean ± std over cases)\n" + _target_table(rows, "ssim", stages)
    if segmenter:
        text += "\nDice (mean ± std over case x target)\n" + _region_table(rows, "dice", stages + ("acquired",), True)
    return text


# --------------------------------------------------------------------------- validation table


def metrics_table_markdown(rows: list, columns: tuple = IMAGE_METRICS) -> str:
    """Markdown table of per-target metrics (rows: dicts with ``target`` and metric keys)."""
    header = "| target | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns) + "\n"
    lines = []
    for row in rows:
        cells = [_cell_text(row.get(c)) for c in columns]
        lines.append(f"| {row['target']} | " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"


def _cell_text(value: object) -> str:
    """A metric as a table cell: ``n/a`` when missing or NaN, 4 decimals (1 from 100 up)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)
