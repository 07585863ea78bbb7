"""What a case looks like to the model, measured; and the summary of those measures over a training set.

The out-of-distribution check (:mod:`.ood_check`) compares a case with the cases a model was trained
on. Both sides are measured here by one function, :func:`measure_case`, so training and synthesis can
never measure differently:

* per input, on its own grid as given: the voxel size, the brain (signal foreground) volume and the
  share of non-zero voxels outside it (a skull-stripped volume has none: a head keeps noise in the
  air around it);
* per input, after the model's own preparation (:func:`~.model_grid_inputs.prepare_model_grid_inputs`:
  model grid, brain mask, scaled to [0, 1] by the brain's 99.5th percentile): quantiles of the brain
  intensities (their median is the intensity-encoding statistic the model is conditioned on);
* per pair of inputs: the rank correlation of their brain intensities, which a scrambled or swapped
  sequence changes even where its histogram stays plausible.

:func:`summarise` turns many cases into per-statistic ranges with a margin, stored in a bundle's
``bundle.json`` under ``metadata.training_statistics`` (:data:`METADATA_KEY`). (The absolute
preconditions, skull-stripped or not at all, are :mod:`MRISynthesisLib.clinical.preconditions`;
this module is about resemblance to one model's training data, and ``core`` cannot import
``clinical``.)
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from ..sequences import SEQUENCES, Sequence

if TYPE_CHECKING:  # annotations only: the report writer imports this module without the model-grid code
    from .model_grid_inputs import ModelGridInputs

__all__ = ["METADATA_KEY", "FORMAT_VERSION", "QUANTILE_LEVELS", "measure_inputs", "measure_model_grid",
           "measure_case", "measure_training_case", "summarise", "pair_key"]

#: Where a bundle keeps the summary: ``bundle.json`` -> ``metadata`` -> this key.
METADATA_KEY = "training_statistics"
#: Version of the stored summary's layout (a later layout must not be misread).
FORMAT_VERSION = 1
#: Percentiles of the normalised brain intensities that describe a sequence's distribution.
QUANTILE_LEVELS = (1, 5, 25, 50, 75, 95, 99)
#: Voxels darker than this share of a volume's 99th percentile (of its non-zero voxels) are background unless
#: enclosed: air noise is a few percent of the head's signal, brain tissue far brighter.
SIGNAL_FLOOR = 0.05
#: Brain voxels sampled for a rank correlation: exact enough (+-0.005) and fast on a 1 mm case.
_CORRELATION_SAMPLES = 100_000

#: Margins around the observed training range (``span`` = max - min over the training cases): a case
#: is out of range only beyond them. One span each side: on the 2.5 mm demo model's 40 training phantoms the
#: T1 median ranged 0.67-0.85 and 2 of 20 held-out phantoms of the same kind had 0.55-0.56, 0.6 spans
#: below (half a span gave those two false alarms); the floors cover a training set too uniform to show
#: any spread (every phantom lies exactly on the 2.5 mm grid).
MARGINS: Dict[str, dict] = {
    "quantiles": {"span": 1.0, "floor": 0.03},  # on the model's [0, 1] scale
    "intensity_encoding": {"span": 1.0, "floor": 0.03},
    "rank_correlation": {"span": 1.0, "floor": 0.1},
    "brain_ml": {"span": 0.5, "relative": 0.1},  # plus 10 % of the largest trained brain
    "outside_fraction": {"span": 0.5, "floor": 0.05, "no_low": True},  # fewer voxels outside is never a problem
    # a quarter coarser than any trained voxel; finer input is no stranger: it is resampled onto the model
    # grid, the way the training cases were
    "spacing_mm": {"factor": 1.25, "no_low": True},
}


def pair_key(first: Sequence, second: Sequence) -> str:
    """``"t1n-t2w"``: the two sequences in canonical order."""
    a, b = sorted((first, second), key=SEQUENCES.index)
    return f"{a.value}-{b.value}"


def _foreground(voxels: np.ndarray, nonzero: np.ndarray) -> np.ndarray:
    """Voxels brighter than :data:`SIGNAL_FLOOR` of the bright end, enclosed holes filled: the brain of a
    skull-stripped volume (dark ventricles included), the head of a volume with skull (dark bone enclosed
    by scalp); noise in the air stays outside. (An Otsu threshold was tried first: on some skull-stripped
    T1 volumes it fell between grey and white matter and left the cortex outside.)"""
    from scipy import ndimage

    values = voxels[nonzero]
    step = max(1, values.size // 1_000_000)
    floor = SIGNAL_FLOOR * float(np.percentile(values[::step], 99)) if values.size else 0.0
    return ndimage.binary_fill_holes(voxels > floor)


def measure_inputs(images: Mapping[Sequence, sitk.Image]) -> Dict[str, dict]:
    """Per input, on its own grid: ``spacing_mm`` (x, y, z), ``brain_ml`` and ``outside_fraction``."""
    measured = {}
    for sequence in (s for s in SEQUENCES if s in images):
        image = images[sequence]
        voxels = sitk.GetArrayViewFromImage(image)
        nonzero = voxels != 0
        foreground = _foreground(voxels, nonzero)
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        outside = np.count_nonzero(nonzero & ~foreground) / max(1, int(np.count_nonzero(nonzero)))
        measured[sequence.value] = {
            "spacing_mm": [round(float(s), 4) for s in image.GetSpacing()],
            "brain_ml": round(float(np.count_nonzero(foreground)) * voxel_ml, 1),
            "outside_fraction": round(float(outside), 4),
        }
    return measured


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values)


def measure_model_grid(prepared: "ModelGridInputs") -> dict:
    """Per input its normalised brain ``quantiles`` and ``intensity_encoding``; per pair its ``rank_correlation``."""
    from .preprocessing import intensity_encoding_value

    brain = prepared.brain
    step = max(1, int(np.count_nonzero(brain)) // _CORRELATION_SAMPLES)
    sequences = [s for s in SEQUENCES if s in prepared.scaled]
    per_sequence: Dict[str, dict] = {}
    samples = {}
    for sequence in sequences:
        unit = (prepared.scaled[sequence][brain] + 1.0) / 2.0  # the model's [-1, 1] scale as [0, 1]
        per_sequence[sequence.value] = {
            "quantiles": [round(float(q), 4) for q in np.percentile(unit, QUANTILE_LEVELS)],
            "intensity_encoding": round(intensity_encoding_value(prepared.scaled[sequence], brain), 4),
        }
        samples[sequence] = _ranks(unit[::step])
    pairs = {}
    for first, second in itertools.combinations(sequences, 2):
        rho = np.corrcoef(samples[first], samples[second])[0, 1]
        pairs[pair_key(first, second)] = round(float(rho), 4) if np.isfinite(rho) else 0.0
    return {"sequences": per_sequence, "pairs": pairs}


def measure_case(images: Mapping[Sequence, sitk.Image], prepared: Optional["ModelGridInputs"]) -> dict:
    """Everything the check compares: ``{"sequences": {seq: {...}}, "pairs": {...}}`` (JSON-ready).

    ``prepared`` is the case on the model grid (None when it could not be prepared: then only the
    measures on the inputs' own grids are there).
    """
    sequences = measure_inputs(images)
    pairs: dict = {}
    if prepared is not None:
        grid = measure_model_grid(prepared)
        for key, values in grid["sequences"].items():
            sequences.setdefault(key, {}).update(values)
        pairs = grid["pairs"]
    return {"sequences": sequences, "pairs": pairs}


def measure_training_case(images: Mapping[Sequence, sitk.Image], generator) -> dict:
    """:func:`measure_case` of one training case, prepared for ``generator``'s model grid as a synthesis
    prepares its inputs (:func:`~.model_grid_inputs.prepare_model_grid_inputs`)."""
    from .model_grid_inputs import prepare_model_grid_inputs

    return measure_case(images, prepare_model_grid_inputs(dict(images), [], generator))


# --------------------------------------------------------------------------- summary over training cases


def _range(values: Iterable[float], margin: Mapping[str, float]) -> dict:
    """Observed ``min``/``max`` and the accepted ``low``/``high`` (with ``margin``) of one statistic."""
    values = [float(v) for v in values]
    low, high = min(values), max(values)
    if "factor" in margin:
        return {"min": round(low, 4), "max": round(high, 4),
                "low": None if margin.get("no_low") else round(low / margin["factor"], 4),
                "high": round(high * margin["factor"], 4)}
    extra = max(margin.get("span", 0.0) * (high - low), margin.get("floor", 0.0),
                margin.get("relative", 0.0) * abs(high))
    return {"min": round(low, 4), "max": round(high, 4),
            "low": None if margin.get("no_low") else round(low - extra, 4), "high": round(high + extra, 4)}


def summarise(cases: List[dict], grid: Optional[Mapping] = None) -> dict:
    """Per-statistic ranges over ``cases`` (each a :func:`measure_case` dict): the stored summary.

    Every sequence's statistics, the pairs' correlations; ``grid`` records the model grid measured on.
    """
    if not cases:
        raise ValueError("training statistics need at least one case")
    sequences: Dict[str, dict] = {}
    for sequence in SEQUENCES:
        found = [case["sequences"][sequence.value] for case in cases if sequence.value in case["sequences"]]
        if not found:
            continue
        entry = {
            "spacing_mm": _range((s for case in found for s in case["spacing_mm"]), MARGINS["spacing_mm"]),
            "brain_ml": _range((case["brain_ml"] for case in found), MARGINS["brain_ml"]),
            "outside_fraction": _range((case["outside_fraction"] for case in found), MARGINS["outside_fraction"]),
        }
        with_grid = [case for case in found if "quantiles" in case]
        if with_grid:
            entry["quantiles"] = [_range((case["quantiles"][i] for case in with_grid), MARGINS["quantiles"])
                                  for i in range(len(QUANTILE_LEVELS))]
            entry["intensity_encoding"] = _range((case["intensity_encoding"] for case in with_grid),
                                                 MARGINS["intensity_encoding"])
        sequences[sequence.value] = entry
    keys = sorted({key for case in cases for key in case.get("pairs", {})})
    pairs = {key: _range((case["pairs"][key] for case in cases if key in case.get("pairs", {})),
                         MARGINS["rank_correlation"]) for key in keys}
    return {"version": FORMAT_VERSION, "cases": len(cases), "quantile_levels": list(QUANTILE_LEVELS),
            "grid": dict(grid or {}), "margins": MARGINS, "sequences": sequences, "pairs": pairs}
