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

from ..metrics import IMAGE_METRICS, SEGMENTATION_METRICS, protocol_columns, protocol_description
from .calibration import CALIBRATION_COLUMNS, WORST_SHARE
from .intensity import INTENSITY_MODE_TITLES
from .rows import (PAPER_NAMES, PAPER_ORDER, PAPER_REGIONS, PSEUDO_SEGMENTATION_METRICS, RUN_COLUMNS, STAGE_NAMES,
                   finite_values, has_segmentation, reported_stages, select_rows)

__all__ = ["rows_protocol", "protocol_line", "rows_to_csv", "summary_markdown", "console_summary",
           "calibration_markdown", "metrics_table_markdown"]


def rows_protocol(rows: list) -> str:
    """The scoring protocol of the rows (their ``protocol`` column; ``brain`` for rows without one)."""
    protocols = {row.get("protocol") or "brain" for row in rows}
    if len(protocols) > 1:
        raise ValueError(f"evaluation rows: the protocol column mixes {', '.join(sorted(protocols))}; one "
                         "evaluation is scored by one protocol")
    return protocols.pop() if protocols else "brain"


def protocol_line(protocol: str) -> str:
    """``Scoring protocol: <name>`` (with ``torchmetrics <version>`` for brasyn): which numbers these are."""
    from ..metrics import protocol_provenance

    provenance = protocol_provenance(protocol)
    version = provenance.get("torchmetrics_version")
    return f"Scoring protocol: {protocol}" + (f" (torchmetrics {version})" if version else "")


# --------------------------------------------------------------------------- CSV


def _evaluation_columns(rows: list) -> list:
    """The evaluation CSV's columns: case, target, stage, protocol, the protocol's image metrics and, with a
    segmenter, Dice/HD95."""
    columns = ["case", "target", "stage", "protocol", *protocol_columns(rows_protocol(rows))]
    if any("dice_WT" in row for row in rows):  # empty cells for cases without a label map
        columns += list(SEGMENTATION_METRICS)
    if any("pseudo_dice_WT" in row for row in rows):
        columns += list(PSEUDO_SEGMENTATION_METRICS)
    columns += [key for key in RUN_COLUMNS if any(key in row for row in rows)]
    columns += [key for key in CALIBRATION_COLUMNS if any(key in row for row in rows)]
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


def _without_intensity_encoding(rows: list) -> bool:
    """True when the synthesis rows carry no intensity value: a model trained without intensity encoding."""
    values = [row.get("intensity_value") for row in rows if row.get("stage") in ("stage1", "final")]
    return bool(values) and finite_values(values).size == 0 and any("intensity_value" in row for row in rows)


def _intensity_title(rows: list) -> str:
    """``, intensity encoding: IE (mean)`` from the rows' ``intensity`` column ('' for rows without one)."""
    modes = list(dict.fromkeys(row["intensity"] for row in rows if row.get("intensity")))
    if not modes:
        return ""
    if _without_intensity_encoding(rows):
        return ", no intensity encoding"
    return ", intensity encoding: " + " + ".join(f"IE ({INTENSITY_MODE_TITLES.get(m, m)})" for m in modes)


def _named_for_intensity(text: str, rows: list) -> str:
    """The summary with the stage-1 row named after the rows' intensity setting (the paper's Table 1 row)."""
    if _without_intensity_encoding(rows):
        return text.replace(STAGE_NAMES["stage1"], "HF-GAN, no intensity encoding [stage 1]")
    modes = list(dict.fromkeys(row["intensity"] for row in rows if row.get("intensity")))
    if len(modes) != 1 or modes[0] == "mean":
        return text
    return text.replace(STAGE_NAMES["stage1"], STAGE_NAMES["stage1"].replace(
        "(mean)", f"({INTENSITY_MODE_TITLES.get(modes[0], modes[0])})"))


def summary_markdown(rows: list, model: str, segmenter: bool, refiner: bool, notes: TypingSequence = (),
                     segmenter_name: str = "the bundle's segmenter") -> str:
    """The evaluation summary in the paper's layout (Tables 1-3), plus PSNR, NMSE and HD95 (brain protocol)
    or PSNR and MSE (brasyn protocol); the protocol is read from the rows and named at the top."""
    if rows_protocol(rows) == "brasyn":
        return _named_for_intensity(_brasyn_summary(rows, model, segmenter, refiner, notes, segmenter_name)
                                    + calibration_markdown(rows), rows)
    cases = list(dict.fromkeys(r["case"] for r in rows))
    stages = reported_stages(refiner)
    parts = [
        f"# Evaluation of {model} (MRISynthesis){_intensity_title(rows)}\n",
        f"{len(cases)} case(s): {', '.join(cases)}. Each target is synthesised from the other three "
        "acquired sequences and compared with the acquired one. Images are mapped to [0, 1] by their own "
        "brain 0.5/99.5 percentiles; SSIM is averaged over the brain, the tumour region (label > 0) and the "
        "healthy rest. Values are mean ± sample std over cases (Avg.: of the per-case mean over targets); "
        "non-finite values (empty regions) are left out.\n",
        f"{protocol_line('brain')}: {protocol_description('brain')}.\n",
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
    parts += _dice_sections(rows, stages, segmenter_name) if segmenter else [_SKIPPED_DICE]
    parts += ["## PSNR (dB)\n", _target_table(rows, "psnr", stages, digits=2),
              "## NMSE\n", _target_table(rows, "nmse", stages), "## MAE\n", _target_table(rows, "mae", stages)]
    return _named_for_intensity("\n".join(parts) + calibration_markdown(rows), rows)


def calibration_markdown(rows: list) -> str:
    """The uncertainty map's calibration against its baselines ('' when the rows have none): Spearman with the
    absolute error and AUROC for the worst-error voxels, mean ± std over case x target, then AUROC by target."""
    scored = [row for row in rows if row.get("uncertainty_auroc") is not None]
    if not scored:
        return ""
    lines = ["\n## Uncertainty map: calibration\n",
             f"Over the brain voxels of each case and target: Spearman correlation of the map with |synthetic - "
             f"acquired|, and AUROC of the map for finding the {100 * WORST_SHARE:g} % worst-error voxels. "
             "Baselines: the refinement magnitude |final - stage 1| and a constant map; for reference, the map's "
             "positional part alone (the synthesis's spread over one-voxel moves, without the samples), its "
             "contrast part alone (the synthesis's distance from its brain median) and its rarity part alone "
             "(how rare each voxel's combination of input intensities is in its brain). The "
             "reliability diagram is reliability.png.\n",
             "| Map | Spearman | AUROC |\n|---|---|---|"]
    for name, prefix in (("uncertainty (samples, position, contrast, rarity)", "uncertainty"),
                         ("refinement magnitude", "refinement"), ("positional part alone", "position"),
                         ("contrast part alone", "contrast"), ("rarity part alone", "rarity")):
        if not any(r.get(f"{prefix}_auroc") is not None for r in scored):
            continue
        lines.append(f"| {name} | {_mean_std(r.get(f'{prefix}_spearman') for r in scored)} | "
                     f"{_mean_std(r.get(f'{prefix}_auroc') for r in scored)} |")
    lines.append(f"| constant | n/a | {_mean_std(r.get('constant_auroc') for r in scored)} |")
    header = "| AUROC | " + " | ".join(PAPER_NAMES[s] for s in PAPER_ORDER) + " |"
    table = [header, "|---|" + "---|" * len(PAPER_ORDER)]
    for name, key in (("uncertainty", "uncertainty_auroc"), ("refinement", "refinement_auroc")):
        cells = [_mean_std(r.get(key) for r in scored if r["target"] == s.value) for s in PAPER_ORDER]
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nBy target\n\n" + "\n".join(table) + "\n"


_SKIPPED_DICE = "## Table 3. Dice score\n\nSkipped: the bundle has no segmenter.\n"


def _dice_sections(rows: list, stages: TypingSequence, segmenter_name: str = "the bundle's segmenter") -> list:
    """Table 3 (Dice by region and by target, HD95) against the label maps, then against the pseudo-labels."""
    seg_stages = tuple(stages) + ("acquired",)
    if not has_segmentation(rows):
        parts = ["## Table 3. Dice score\n\nNo case has a label map: Dice against the truth is not reported "
                 "(see the pseudo-label Dice below).\n"]
    else:
        parts = [
            "## Table 3. Dice score\n",
            f"{segmenter_name[:1].upper() + segmenter_name[1:]} on the completed set (three acquired sequences + "
            "the synthetic target), against the label map (cases without one are left out); mean ± std over case "
            "x target. The last row segments the four acquired sequences (upper bound).\n",
            _region_table(rows, "dice", seg_stages, average=True),
            "Dice by target\n", _dice_by_target(rows, stages),
            "HD95 (mm)\n", _region_table(rows, "hd95", seg_stages, average=False, digits=2),
        ]
    if any(row.get("pseudo_dice_WT") is not None for row in rows):
        parts += _pseudo_dice_section(rows, stages, segmenter_name)
    return parts


def _pseudo_dice_section(rows: list, stages: TypingSequence, segmenter_name: str) -> list:
    """The paper's Table 3 as it was made: Dice against pseudo-labels (WT, ET, TC, Avg per stage)."""
    sources = [row.get("label_source") for row in select_rows(rows, "acquired")]
    return [
        "## Table 3 (pseudo-labels). Dice score against pseudo-labels\n",
        f"The paper's protocol: each case's pseudo-label is {segmenter_name} on its four acquired sequences "
        "(the paper used the FeTS model; no FeTS-compatible weights ship with MRISynthesis, so these are not "
        "FeTS pseudo-labels). The same segmenter on the completed set (three acquired sequences + the synthetic "
        "target) is scored against it; mean ± std over case x target. The four acquired sequences score 1 "
        f"against their own pseudo-label by construction. Tumour region of the image metrics: the label map for "
        f"{sources.count('truth')} case(s), the pseudo-label for {sources.count('pseudo')} case(s).\n",
        _region_table(rows, "pseudo_dice", stages, average=True),
        "HD95 (mm) against the pseudo-labels\n",
        _region_table(rows, "pseudo_hd95", stages, average=False, digits=2),
    ]


def _brasyn_summary(rows: list, model: str, segmenter: bool, refiner: bool, notes: TypingSequence,
                    segmenter_name: str = "the bundle's segmenter") -> str:
    """The summary of rows scored by the BraSyn protocol, laid out like the paper's Tables 1-2."""
    cases = list(dict.fromkeys(r["case"] for r in rows))
    stages = reported_stages(refiner)
    parts = [
        f"# Evaluation of {model} (MRISynthesis){_intensity_title(rows)}\n",
        f"{len(cases)} case(s): {', '.join(cases)}. Each target is synthesised from the other three "
        "acquired sequences and compared with the acquired one. Values are mean ± sample std over cases "
        "(Avg.: of the per-case mean over targets); non-finite values (no tumour mask) are left out.\n",
        f"{protocol_line('brasyn')}: {protocol_description('brasyn')}. These numbers compare with the paper's "
        "Tables 1-2 and the BraSyn leaderboard.\n",
    ]
    if not refiner:
        parts.append("The bundle has no Refiner: only stage 1 is reported.\n")
    parts += [f"{note}\n" for note in notes]
    parts += ["## Table 1. SSIM-Whole\n", _target_table(rows, "ssim_whole", stages),
              "## Table 2. SSIM by region\n", "SSIM-Tumour region\n", _target_table(rows, "ssim_tumour", stages),
              "SSIM-Healthy region\n", _target_table(rows, "ssim_healthy", stages)]
    parts += _dice_sections(rows, stages, segmenter_name) if segmenter else [_SKIPPED_DICE]
    for key, title, digits in (("psnr_whole", "## PSNR (dB)\n\nWhole volume\n", 2),
                               ("psnr_tumour", "Tumour region\n", 2), ("psnr_healthy", "Healthy region\n", 2),
                               ("mse_whole", "## MSE\n\nWhole volume\n", 6), ("mse_tumour", "Tumour region\n", 6),
                               ("mse_healthy", "Healthy region\n", 6)):
        parts += [title, _target_table(rows, key, stages, digits=digits)]
    return "\n".join(parts)


def console_summary(rows: list, segmenter: bool, refiner: bool) -> str:
    """The headline tables for the terminal, after the scoring protocol's line: SSIM-Whole per target (and
    for brasyn SSIM tumour/healthy) and, with a segmenter, Dice."""
    stages = reported_stages(refiner)
    protocol = rows_protocol(rows)
    text = protocol_line(protocol) + "\n"
    if protocol == "brasyn":
        text += "SSIM-Whole (mean ± std over cases)\n" + _target_table(rows, "ssim_whole", stages)
        text += "\nSSIM-Tumour region\n" + _target_table(rows, "ssim_tumour", stages)
        text += "\nSSIM-Healthy region\n" + _target_table(rows, "ssim_healthy", stages)
    else:
        text += "SSIM-Whole (mean ± std over cases)\n" + _target_table(rows, "ssim", stages)
    if segmenter and has_segmentation(rows):
        text += "\nDice (mean ± std over case x target)\n" + _region_table(rows, "dice", stages + ("acquired",), True)
    if segmenter and any(row.get("pseudo_dice_WT") is not None for row in rows):
        text += "\nDice against the pseudo-labels (mean ± std over case x target)\n" + \
            _region_table(rows, "pseudo_dice", stages, True)
    return text + calibration_markdown(rows)


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
