"""Is the uncertainty map calibrated? Scores of how well it finds the synthesis's errors, against baselines.

On a case with ground truth, over the brain voxels, per target:

* Spearman's rank correlation between the uncertainty and the absolute error (``scipy.stats.spearmanr``);
* the AUROC of the uncertainty as a detector of the 10 % worst-error voxels of the brain
  (``sklearn.metrics.roc_auc_score``): 1 finds them perfectly, 0.5 is chance;
* the same for two baselines: the refinement magnitude |final - stage 1| (a map the tool already gives),
  and a constant (AUROC exactly 0.5; its rank correlation is undefined); and, to show what each part adds,
  for the map's positional part alone (:func:`..core.uncertainty.positional_spread` of the synthesis, on
  the input grid), its contrast part alone (:func:`..core.uncertainty.contrast_spread`) and its rarity part
  alone (:func:`..core.uncertainty.rarity_spread` of the acquired inputs on the input grid).

The reliability diagram bins the brain voxels by uncertainty (equal-count bins) and plots the mean absolute
error per bin against the bin's mean uncertainty; for a Gaussian error of that standard deviation the mean
absolute error is sqrt(2/pi) times it (the dotted line).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional, Sequence as TypingSequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..core.uncertainty import contrast_spread, positional_spread, rarity_spread

__all__ = ["WORST_SHARE", "RELIABILITY_BINS", "CALIBRATION_COLUMNS", "worst_error_voxels", "score_map",
           "calibration_scores", "reliability_curve", "target_calibration", "synthesis_grid", "synthesis_brain",
           "calibrate_case", "save_reliability_diagram"]

#: The share of brain voxels with the largest absolute error that the AUROC asks the map to find.
WORST_SHARE = 0.10
#: Equal-count uncertainty bins of the reliability diagram.
RELIABILITY_BINS = 10
#: Evaluation columns (final-stage rows) the calibration adds.
CALIBRATION_COLUMNS = ("uncertainty_spearman", "uncertainty_auroc", "refinement_spearman", "refinement_auroc",
                       "constant_auroc", "position_spearman", "position_auroc", "contrast_spearman", "contrast_auroc",
                       "rarity_spearman", "rarity_auroc", "uncertainty_mean")


def worst_error_voxels(error: np.ndarray, share: float = WORST_SHARE) -> np.ndarray:
    """Bool array: the ``share`` of voxels (at least one) with the largest ``error`` (ties by position)."""
    error = np.asarray(error, dtype=np.float64).ravel()
    count = max(1, int(math.ceil(share * error.size)))
    labels = np.zeros(error.size, dtype=bool)
    labels[np.argsort(error, kind="stable")[-count:]] = True
    return labels


def score_map(values: np.ndarray, error: np.ndarray, worst: np.ndarray) -> dict:
    """Spearman (values vs error) and AUROC (values finding ``worst``); Spearman None for a constant map."""
    from scipy.stats import spearmanr

    values = np.asarray(values, dtype=np.float64).ravel()
    constant = values.size == 0 or float(values.max()) == float(values.min())
    rho = None if constant else float(spearmanr(values, np.asarray(error, dtype=np.float64).ravel())[0])
    auroc = _auroc(worst, values) if 0 < worst.sum() < worst.size else None
    return {"spearman": rho, "auroc": auroc}


def _auroc(labels: np.ndarray, values: np.ndarray) -> float:
    """Area under the ROC curve: scikit-learn's, else the same number from scipy's Mann-Whitney U statistic."""
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:  # scikit-learn is not a declared dependency; scipy gives the same area (ties count half)
        from scipy.stats import mannwhitneyu

        positive, negative = values[labels], values[~labels]
        return float(mannwhitneyu(positive, negative).statistic / (positive.size * negative.size))
    return float(roc_auc_score(labels, values))


def calibration_scores(uncertainty: np.ndarray, error: np.ndarray, brain: np.ndarray,
                       refinement: Optional[np.ndarray] = None, position: Optional[np.ndarray] = None,
                       contrast: Optional[np.ndarray] = None, rarity: Optional[np.ndarray] = None) -> dict:
    """The calibration columns (:data:`CALIBRATION_COLUMNS`) over the ``brain`` voxels of same-grid arrays
    (``position``, ``contrast``, ``rarity``: the map's parts alone, scored for reference)."""
    brain = np.asarray(brain, dtype=bool)
    error_in = np.abs(np.asarray(error, dtype=np.float64)[brain])
    uncertainty_in = np.asarray(uncertainty, dtype=np.float64)[brain]
    worst = worst_error_voxels(error_in)
    scores = score_map(uncertainty_in, error_in, worst)
    out = {"uncertainty_spearman": scores["spearman"], "uncertainty_auroc": scores["auroc"],
           "refinement_spearman": None, "refinement_auroc": None,
           "constant_auroc": score_map(np.zeros_like(error_in), error_in, worst)["auroc"],
           "position_spearman": None, "position_auroc": None, "contrast_spearman": None, "contrast_auroc": None,
           "rarity_spearman": None, "rarity_auroc": None,
           "uncertainty_mean": float(uncertainty_in.mean()) if uncertainty_in.size else None}
    for name, values in (("refinement", refinement), ("position", position), ("contrast", contrast),
                         ("rarity", rarity)):
        if values is not None:
            scores = score_map(np.abs(np.asarray(values, dtype=np.float64)[brain]), error_in, worst)
            out.update({f"{name}_spearman": scores["spearman"], f"{name}_auroc": scores["auroc"]})
    return out


def reliability_curve(uncertainty: np.ndarray, error: np.ndarray, brain: np.ndarray,
                      bins: int = RELIABILITY_BINS) -> tuple:
    """(mean uncertainty, mean absolute error) per equal-count uncertainty bin of the brain voxels."""
    brain = np.asarray(brain, dtype=bool)
    values = np.asarray(uncertainty, dtype=np.float64)[brain]
    errors = np.abs(np.asarray(error, dtype=np.float64)[brain])
    order = np.argsort(values, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, max(1, values.size))) if g.size]
    return [float(values[g].mean()) for g in groups], [float(errors[g].mean()) for g in groups]


def synthesis_grid(images: Mapping) -> Tuple[dict, np.ndarray]:
    """(the acquired images as arrays on the pipeline's reference grid, ``{sequence: array}``; the brain the
    pipeline works in for them, their non-zero union)."""
    from ..core.io import align_inputs
    from ..core.preprocessing import brain_mask

    arrays = {sequence: sitk.GetArrayFromImage(image) for sequence, image in align_inputs(dict(images)).images.items()}
    return arrays, brain_mask(arrays.values())


def synthesis_brain(images: Mapping) -> np.ndarray:
    """The brain the pipeline works in for these inputs (their non-zero union, on the reference grid)."""
    return synthesis_grid(images)[1]


def target_calibration(target, brain: np.ndarray, acquired: Optional[Mapping] = None) -> Optional[dict]:
    """Calibration columns and the reliability curve (``reliability``) of one validated target (a
    ``TargetResult`` with error and uncertainty maps), or None without them; ``acquired``: the case's acquired
    arrays on the brain's grid (:func:`synthesis_grid`), whose other sequences than the target, the ones it
    was synthesised from, give the rarity part's own score."""
    if getattr(target, "uncertainty_map", None) is None or target.error_map is None:
        return None
    uncertainty = sitk.GetArrayViewFromImage(target.uncertainty_map)
    error = sitk.GetArrayViewFromImage(target.error_map)
    refinement = None if target.refinement_map is None else sitk.GetArrayViewFromImage(target.refinement_map)
    synthetic = sitk.GetArrayFromImage(target.synthetic).astype(np.float32)
    inputs = [array for sequence, array in (acquired or {}).items() if sequence != target.sequence]
    rarity = rarity_spread(inputs, synthetic, brain) if inputs else None
    scores = calibration_scores(uncertainty, error, brain, refinement, positional_spread(synthetic, brain),
                                contrast_spread(synthetic, brain), rarity)
    scores["reliability"] = reliability_curve(uncertainty, error, brain)
    return scores


def calibrate_case(files, bundle, samples: int, seed: int = 0, device: str = "auto", targets=None) -> list:
    """One row per target of a complete case (``io.CaseFiles``): the target synthesised from the other three
    with ``samples`` uncertainty samples and scored by :func:`target_calibration` (``reliability`` included).

    Made like ``mrisynth evaluate``'s rows (one leave-one-out synthesis of every target, no tumour maps), but
    without the segmentation the evaluation adds."""
    from ..core.io import read_image
    from ..core.pipeline import synthesize
    from ..sequences import SEQUENCES, parse_sequence

    images = {s: read_image(files.sequences[s]) for s in SEQUENCES}
    wanted = [s for s in SEQUENCES if targets is None or s in {parse_sequence(t) for t in targets}]
    result = synthesize(images, bundle, targets=wanted, device=device, tumour_maps=False,
                        ground_truth={s: images[s] for s in wanted},
                        uncertainty=samples, uncertainty_seed=seed)
    arrays, brain = synthesis_grid(images)
    rows = []
    for sequence, target in result.targets.items():
        rows.append({"case": files.case_id, "target": sequence.value, "samples": samples,
                     **(target_calibration(target, brain, arrays) or {})})
    return rows


def save_reliability_diagram(path: str | Path, curves: Mapping[str, TypingSequence], title: str = "") -> Path:
    """Write the reliability diagram PNG: one line per name in ``curves`` ({name: (uncertainties, errors)})."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..core.result_files import png_metadata

    figure = Figure(figsize=(5.6, 4.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    top = 0.0
    for name, (uncertainty, error) in curves.items():
        axes.plot(uncertainty, error, marker="o", markersize=3, linewidth=1.2, label=name)
        top = max(top, max(uncertainty, default=0.0))
    if top > 0:
        line = np.linspace(0.0, top, 2)
        axes.plot(line, math.sqrt(2.0 / math.pi) * line, linestyle=":", color="grey",
                  label="Gaussian error of that SD")
    axes.set_xlabel("uncertainty (SD, synthetic units; bin mean)")
    axes.set_ylabel("mean absolute error (synthetic units)")
    axes.set_title(title or "Reliability of the uncertainty map", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, metadata=png_metadata())
    return path
