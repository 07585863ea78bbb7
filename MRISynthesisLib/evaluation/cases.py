"""Evaluation of a model bundle on complete cases, reported in the layout of the paper's Tables 1-3.

For every case (all four sequences and a BraTS label map) and every target, the target is
synthesised from the other three acquired sequences and compared with the acquired one:

* image similarity before (stage 1) and after refinement: SSIM over the brain, the tumour
  region (label > 0) and the healthy rest, PSNR, NMSE and MAE (from :func:`pipeline.synthesize`,
  which computes them with :mod:`metrics`);
* tumour segmentation: the bundle's segmenter on the *completed set* (three acquired + the
  synthetic target, on the model grid and z-scored as the pipeline does), mapped back to the
  case grid and scored with Dice and HD95 (WT, TC, ET) against the label map; the segmenter on
  all four acquired sequences is the reference upper bound.

One row per case x target x stage (``stage1``, ``final``; ``acquired`` for the reference, with
target ``none``). :func:`write_evaluation` turns the rows into a CSV, a Markdown summary and box
plots. Figures use matplotlib's object API with the Agg canvas, so no global backend is touched.
"""
from __future__ import annotations

import csv
import io as text_io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Sequence as TypingSequence

import numpy as np
import SimpleITK as sitk

from ..core.io import CaseFiles, InputError, find_case_files, is_image_file, read_image, same_grid, resample_to
from ..core.progress import ProgressCallback, scaled
from ..sequences import SEQUENCES, Sequence, parse_sequence

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "EvaluationError",
    "IMAGE_COLUMNS",
    "SEGMENTATION_COLUMNS",
    "find_evaluation_cases",
    "read_label",
    "evaluate_cases",
    "evaluate_case",
    "segment_label",
    "region_psnr",
    "rows_to_csv",
    "summary_markdown",
    "console_summary",
    "save_boxplots",
    "write_evaluation",
]

#: Image-similarity columns (the pipeline's validation metrics).
IMAGE_COLUMNS = ("ssim", "ssim_tumour", "ssim_healthy", "psnr", "nmse", "mae", "ssim_volume")
#: Segmentation columns, as :func:`metrics.segmentation_metrics` names them.
SEGMENTATION_COLUMNS = ("dice_WT", "dice_TC", "dice_ET", "hd95_WT", "hd95_TC", "hd95_ET")
#: Targets in the paper's column order, and the paper's names for them.
PAPER_ORDER = (Sequence.T1N, Sequence.T2W, Sequence.T2F, Sequence.T1C)
PAPER_NAMES = {Sequence.T1N: "T1", Sequence.T2W: "T2", Sequence.T2F: "FLAIR", Sequence.T1C: "T1ce"}
#: Regions in the paper's order (Table 3).
PAPER_REGIONS = ("WT", "ET", "TC")
STAGE_NAMES = {"stage1": "HF-GAN + IE (mean) [stage 1]", "final": "+ Refiner",
               "acquired": "all four acquired (reference)"}
REFERENCE_TARGET = "none"


class EvaluationError(InputError):
    """Evaluation input that cannot be used (no cases, an incomplete case); one line."""


# --------------------------------------------------------------------------- finding cases


def _holds_images(folder: Path) -> bool:
    return any(entry.is_file() and is_image_file(entry) for entry in folder.iterdir())


def find_evaluation_cases(data_dir: str | Path, limit: Optional[int] = None) -> list[CaseFiles]:
    """Complete cases under ``data_dir``: its sub-folders (sorted), or the folder itself if it is one.

    Every case must hold the four sequences and a label map; the first that does not is a
    one-line :class:`EvaluationError` naming it. ``limit`` keeps the first cases only.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise EvaluationError(f"{data_dir}: not a folder")
    if limit is not None and limit < 1:
        raise EvaluationError(f"number of cases must be at least 1, got {limit}")
    if _holds_images(data_dir):
        folders = [data_dir]
    else:
        folders = [entry for entry in sorted(data_dir.iterdir())
                   if entry.is_dir() and not entry.name.startswith(".") and _holds_images(entry)]
    if not folders:
        raise EvaluationError(f"{data_dir}: no case folders (BraTS-style folders with t1n, t1c, t2w, t2f "
                              "and seg images)")
    cases = []
    for folder in folders[:limit]:
        files = find_case_files(folder)
        reason = files.incomplete_reason("evaluation")
        if reason:
            raise EvaluationError(reason)
        cases.append(files)
    return cases


# --------------------------------------------------------------------------- one case


def read_label(files: CaseFiles, reference: sitk.Image) -> sitk.Image:
    """The case's label map on ``reference``'s grid, BraTS 2021 enhancing label 4 read as 3."""
    label = read_image(files.label, check=False)
    if label.GetDimension() != 3:
        raise EvaluationError(f"{files.label}: label map is not 3D")
    if not same_grid(label, reference):
        label = resample_to(label, reference, sitk.sitkNearestNeighbor)
    array = sitk.GetArrayFromImage(label)
    if array.max() == 4 and not (array == 3).any():
        array = np.where(array == 4, 3, array)
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.CopyInformation(reference)
    return out


def segment_label(segmenter, volumes: np.ndarray, brain: np.ndarray, device) -> np.ndarray:
    """BraTS label map (uint8, 0 outside ``brain``) of the segmenter on z-scored [4, Z, H, W] volumes.

    Like the pipeline's tumour regions, the segmenter runs on the brain's bounding box (4-voxel
    margin) only: the model grid is mostly background.
    """
    import torch

    from ..models.segmenter import predict_region_probabilities, regions_to_label
    from ..core.pipeline import brain_box, segmenter_roi

    box = brain_box(brain, margin=4)
    cropped = np.ascontiguousarray(volumes[(slice(None),) + box])
    probabilities = predict_region_probabilities(
        segmenter, torch.from_numpy(cropped)[None], roi_size=segmenter_roi(cropped.shape[1:]), device=device,
        output_device="cpu")
    label = np.zeros(brain.shape, dtype=np.uint8)
    label[box] = regions_to_label(probabilities[0].numpy())
    label[~brain] = 0
    return label


def _label_on_input_grid(label: np.ndarray, prepared) -> sitk.Image:
    """Model-grid label -> uint8 image on the case grid (nearest neighbour)."""
    image = prepared.grid.from_model(label.astype(np.float32), nearest=True)
    out = sitk.GetImageFromArray(np.rint(sitk.GetArrayFromImage(image)).astype(np.uint8))
    out.CopyInformation(image)
    return out


class _Segmentation:
    """The bundle's segmenter on completed sets of one case (model grid), scored against its label map."""

    def __init__(self, prepared, bundle, truth: sitk.Image, device) -> None:
        self.prepared = prepared
        self.segmenter = bundle.segmenter
        self.device = device
        self.truth = sitk.GetArrayFromImage(truth)
        # metrics take spacing in array axis order (z, y, x)
        self.spacing = tuple(truth.GetSpacing()[::-1])

    def predict(self, synthetic: Mapping) -> sitk.Image:
        """Label image (case grid) of the completed set with ``{target: model-grid volume}`` put in."""
        from ..core.pipeline import completed_set

        volumes = completed_set(self.prepared, dict(synthetic))
        label = segment_label(self.segmenter, volumes, self.prepared.brain, self.device)
        return _label_on_input_grid(label, self.prepared)

    def score(self, predicted: sitk.Image) -> dict:
        """Dice and HD95 (mm) of WT, TC and ET."""
        from ..metrics import segmentation_metrics

        return segmentation_metrics(sitk.GetArrayFromImage(predicted), self.truth, self.spacing)


def _segmentation_file(case_id: str, target: Optional[Sequence], stage: str) -> str:
    if target is None:
        return f"{case_id}-segmentation-acquired.nii.gz"
    suffix = "" if stage == "final" else f"-{stage}"
    return f"{case_id}-{target.value}-segmentation{suffix}.nii.gz"


def evaluate_case(files: CaseFiles, bundle, device: str = "auto", targets: Optional[Iterable] = None,
                  progress: Optional[ProgressCallback] = None, volumes_dir: Optional[Path] = None) -> list:
    """Rows for one complete case (see the module docstring); ``bundle`` is a loaded ModelBundle.

    ``volumes_dir`` also receives the synthetic volumes (via :func:`outputs.write_result`) and the
    predicted label maps ``<case>-<target>-segmentation[-stage1].nii.gz`` and
    ``<case>-segmentation-acquired.nii.gz``.
    """
    from ..core.devices import resolve_device
    from ..core.pipeline import synthesize

    report = progress or (lambda fraction, message: None)
    images = {s: read_image(p) for s, p in sorted(files.sequences.items(), key=lambda i: SEQUENCES.index(i[0]))}
    reference = images[SEQUENCES[0]]
    label = read_label(files, reference)
    wanted = [s for s in SEQUENCES if targets is None or s in {parse_sequence(t) for t in targets}]
    has_segmenter = bundle.segmenter is not None
    result = synthesize(images, bundle, targets=wanted, device=device, tumour_maps=False,
                        ground_truth=images, label=label, keep_model_grid=has_segmenter,
                        progress=scaled(report, 0.0, 0.7 if has_segmenter else 0.95))
    stages = ("stage1", "final") if bundle.refiner is not None else ("stage1",)
    rows = []
    for sequence, target in result.targets.items():
        values = {"stage1": target.stage1_metrics, "final": target.metrics}
        for stage in stages:
            rows.append({"case": files.case_id, "target": sequence.value, "stage": stage,
                         **{k: values[stage].get(k) for k in IMAGE_COLUMNS}})
    predictions = {}
    if has_segmenter:
        model_grid = result.model_grid
        segmentation = _Segmentation(model_grid.prepared, bundle, label, resolve_device(device))
        by_key = {(row["target"], row["stage"]): row for row in rows}
        jobs = [(sequence, stage) for sequence in result.targets for stage in stages]
        for index, (sequence, stage) in enumerate(jobs):
            report(0.7 + 0.25 * index / (len(jobs) + 1), f"segmenting {sequence.value} ({stage})")
            volume = (model_grid.stage1 if stage == "stage1" else model_grid.final)[sequence]
            predicted = segmentation.predict({sequence: volume})
            by_key[(sequence.value, stage)].update(segmentation.score(predicted))
            predictions[_segmentation_file(files.case_id, sequence, stage)] = predicted
        report(0.95, "segmenting the acquired sequences (reference)")
        predicted = segmentation.predict({})
        reference_row = {"case": files.case_id, "target": REFERENCE_TARGET, "stage": "acquired",
                         **{k: None for k in IMAGE_COLUMNS}, **segmentation.score(predicted)}
        rows.append(reference_row)
        predictions[_segmentation_file(files.case_id, None, "acquired")] = predicted
    if volumes_dir is not None:
        _write_volumes(result, predictions, Path(volumes_dir), files.case_id)
    report(1.0, f"{files.case_id} done")
    return rows


def _write_volumes(result, predictions: Mapping, folder: Path, case_id: str) -> None:
    from ..core.io import write_image
    from ..core.result_files import write_result

    write_result(result, folder, case_id)
    for name, image in predictions.items():
        write_image(image, folder / name, f"segmentation by MRISynthesis {result.model_name}")


def evaluate_cases(case_dirs: Iterable, bundle, device: str = "auto",
                   progress: Optional[ProgressCallback] = None, targets: Optional[Iterable] = None,
                   volumes_dir: Optional[Path] = None) -> list:
    """Evaluate ``bundle`` (loaded or a name/path) on complete case folders; returns all rows.

    ``case_dirs`` are case folders (or :class:`io.CaseFiles`); ``targets`` defaults to all four.
    """
    from ..core.weights import load_bundle

    bundle = load_bundle(bundle)
    cases = [c if isinstance(c, CaseFiles) else _complete_case(Path(c)) for c in case_dirs]
    if not cases:
        raise EvaluationError("no cases to evaluate")
    rows: list = []
    for index, files in enumerate(cases):
        low, high = index / len(cases), (index + 1) / len(cases)
        rows.extend(evaluate_case(files, bundle, device, targets, scaled(progress, low, high), volumes_dir))
    return rows


def _complete_case(folder: Path) -> CaseFiles:
    """One case folder checked like :func:`find_evaluation_cases` checks each case."""
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: not a folder")
    if not _holds_images(folder):
        raise EvaluationError(f"{folder}: no image files in the case folder")
    return find_evaluation_cases(folder)[0]


# --------------------------------------------------------------------------- extra metrics


def region_psnr(reference: np.ndarray, test: np.ndarray, brain: np.ndarray,
                tumour: Optional[np.ndarray]) -> dict:
    """PSNR (dB) over the tumour region and over the healthy brain, as :func:`metrics.image_metrics`
    computes the whole-brain PSNR: both images mapped to [0, 1] by their own brain percentiles,
    data range 1. Empty regions give NaN."""
    from .. import metrics

    brain = np.asarray(brain, dtype=bool)
    reference_01 = metrics.normalise_for_metrics(reference, brain)
    test_01 = metrics.normalise_for_metrics(test, brain)
    tumour = np.zeros_like(brain) if tumour is None else (np.asarray(tumour) != 0) & brain
    out = {}
    for key, region in (("psnr_tumour", tumour), ("psnr_healthy", brain & ~tumour)):
        out[key] = metrics.psnr(reference_01, test_01, region, data_range=1.0) if region.any() else math.nan
    return out


# --------------------------------------------------------------------------- tables


def _columns(rows: list) -> list:
    columns = ["case", "target", "stage", *IMAGE_COLUMNS]
    if any(row.get("dice_WT") is not None for row in rows):
        columns += list(SEGMENTATION_COLUMNS)
    return columns


def rows_to_csv(rows: list, columns: Optional[list] = None) -> str:
    """CSV text of metric rows, one per line; empty cells where a value does not apply.

    ``columns`` default to the evaluation's (case, target, stage, the image metrics and, when
    present, Dice/HD95); the validation table passes its own row keys.
    """
    if not rows:
        return ""
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or _columns(rows), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def _finite(values: Iterable) -> np.ndarray:
    array = np.array([v for v in values if v is not None], dtype=float)
    return array[np.isfinite(array)]


def _mean_std(values: Iterable, digits: int = 4) -> str:
    """``mean ± std`` (sample std over the finite values), ``n/a`` when there are none."""
    array = _finite(values)
    if array.size == 0:
        return "n/a"
    if array.size == 1:
        return f"{array[0]:.{digits}f}"
    return f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f}"


def _select(rows: list, stage: str, target: Optional[str] = None) -> list:
    return [r for r in rows if r["stage"] == stage and (target is None or r["target"] == target)]


def _per_case_average(rows: list, stage: str, key: str) -> list:
    """Per case: the mean of ``key`` over the targets (the paper's Avg. column)."""
    averages = []
    for case in dict.fromkeys(r["case"] for r in rows):
        values = _finite(r.get(key) for r in _select(rows, stage) if r["case"] == case)
        if values.size:
            averages.append(float(values.mean()))
    return averages


def _target_table(rows: list, key: str, stages: TypingSequence, digits: int = 4) -> str:
    """Method x target table of ``key`` with the paper's Avg. column."""
    header = "| Method | " + " | ".join(PAPER_NAMES[s] for s in PAPER_ORDER) + " | Avg. |\n"
    lines = [header + "|---|" + "---|" * (len(PAPER_ORDER) + 1)]
    for stage in stages:
        cells = [_mean_std((r.get(key) for r in _select(rows, stage, s.value)), digits) for s in PAPER_ORDER]
        cells.append(_mean_std(_per_case_average(rows, stage, key), digits))
        lines.append(f"| {STAGE_NAMES[stage]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _region_table(rows: list, prefix: str, stages: TypingSequence, average: bool, digits: int = 4) -> str:
    """Method x region table of ``prefix``_WT/ET/TC (over every case x target row of a stage)."""
    columns = list(PAPER_REGIONS) + (["Avg"] if average else [])
    lines = ["| Method | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns)]
    for stage in stages:
        selected = _select(rows, stage)
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
            cells = [_mean_std(r.get(f"dice_{region}") for r in _select(rows, stage, s.value)) for s in PAPER_ORDER]
            lines.append(f"| {STAGE_NAMES[stage]} | {region} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(rows: list, model: str, segmenter: bool, refiner: bool, notes: TypingSequence = ()) -> str:
    """The evaluation summary in the paper's layout (Tables 1-3), plus PSNR, NMSE and HD95."""
    cases = list(dict.fromkeys(r["case"] for r in rows))
    stages = ("stage1", "final") if refiner else ("stage1",)
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
    stages = ("stage1", "final") if refiner else ("stage1",)
    text = "SSIM-Whole (mean ± std over cases)\n" + _target_table(rows, "ssim", stages)
    if segmenter:
        text += "\nDice (mean ± std over case x target)\n" + _region_table(rows, "dice", stages + ("acquired",), True)
    return text


# --------------------------------------------------------------------------- figures


STAGE_COLOURS = {"stage1": "#7f9fc6", "final": "#d9822b", "acquired": "#6a9f58"}


def _boxes(axes, groups: list, stages: TypingSequence, rows: list, value_of) -> None:
    """Grouped box plots (one box per stage within each group) with the data points on top."""
    width = 0.8 / len(stages)
    rng = np.random.default_rng(0)  # fixed jitter, so figures are reproducible
    for offset, stage in enumerate(stages):
        data, positions = [], []
        for index, group in enumerate(groups):
            values = _finite(value_of(r, group) for r in rows if r["stage"] == stage)
            if values.size:
                data.append(values)
                positions.append(index + (offset - (len(stages) - 1) / 2) * width)
        if not data:
            continue
        parts = axes.boxplot(data, positions=positions, widths=width * 0.85, patch_artist=True,
                             showfliers=False, medianprops={"color": "black"})
        for box in parts["boxes"]:
            box.set_facecolor(STAGE_COLOURS[stage])
            box.set_alpha(0.85)
        for position, values in zip(positions, data):
            jitter = rng.uniform(-width * 0.2, width * 0.2, values.size)
            axes.plot(position + jitter, values, "o", color="black", markersize=3, alpha=0.6)
        axes.plot([], [], "s", color=STAGE_COLOURS[stage], markersize=9, label=STAGE_NAMES[stage])
    axes.set_xticks(range(len(groups)))
    axes.grid(axis="y", alpha=0.3)


def _new_figure(width: float, height: float) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _figure_legend(figure, entries: int) -> None:
    """One legend for the whole figure, under the axes, so it never hides data."""
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=entries, fontsize=9, frameon=False)
    figure.tight_layout(rect=(0.0, 0.07, 1.0, 1.0))


def save_boxplots(rows: list, folder: Path, refiner: bool = True) -> list:
    """``ssim_boxplot.png`` (SSIM whole/tumour/healthy per target) and, with Dice rows,
    ``dice_boxplot.png`` (Dice per region); returns the paths written."""
    from ..core.result_files import png_metadata

    folder = Path(folder)
    stages = ("stage1", "final") if refiner else ("stage1",)
    figure = _new_figure(13.5, 4.2)
    targets = [s for s in PAPER_ORDER if any(r["target"] == s.value for r in rows)]
    titles = {"ssim": "SSIM whole brain", "ssim_tumour": "SSIM tumour region", "ssim_healthy": "SSIM healthy region"}
    for index, key in enumerate(titles):
        axes = figure.add_subplot(1, 3, index + 1)
        _boxes(axes, [s.value for s in targets], stages, rows,
               lambda row, group, key=key: row.get(key) if row["target"] == group else None)
        axes.set_xticklabels([PAPER_NAMES[s] for s in targets])
        axes.set_title(titles[key])
        axes.set_xlabel("synthesised target")
        if index == 0:
            axes.set_ylabel("SSIM")
    figure.suptitle("Synthesis quality before and after refinement", fontsize=12)
    _figure_legend(figure, len(stages))
    paths = [folder / "ssim_boxplot.png"]
    figure.savefig(paths[0], metadata=png_metadata())
    if any(r.get("dice_WT") is not None for r in rows):
        figure = _new_figure(7.5, 4.2)
        axes = figure.add_subplot(1, 1, 1)
        _boxes(axes, list(PAPER_REGIONS), stages + ("acquired",), rows,
               lambda row, group: row.get(f"dice_{group}"))
        axes.set_xticklabels(list(PAPER_REGIONS))
        axes.set_ylabel("Dice")
        axes.set_xlabel("tumour region")
        axes.set_ylim(-0.02, 1.02)
        axes.set_title("Segmenter on the completed set (all targets, all cases)")
        _figure_legend(figure, len(stages) + 1)
        paths.append(folder / "dice_boxplot.png")
        figure.savefig(paths[1], metadata=png_metadata())
    return paths


# --------------------------------------------------------------------------- writing


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
