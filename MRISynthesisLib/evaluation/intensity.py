"""The intensity-encoding value each evaluated target is synthesised with: the rows of the paper's
Table 1 ablation, chosen from the command line (``mrisynth evaluate --intensity``).

* ``mean``: the prior mean of the target (what :func:`pipeline.synthesize` does by default);
* ``2sigma``: a draw from the prior (normal, the prior's mean and sigma) clipped to mean ± 2 sigma;
  one numpy Generator per case and target, seeded by the run's seed, the case name and the target,
  so a rerun (or a run over fewer cases or targets) gives the same value for the same case and target;
* ``gt``: the value of the TRUE target volume, measured exactly as training measures it
  (:func:`preprocessing.intensity_encoding_value` on the prepared model-grid volume): the upper bound.

The priors are the bundle's own when its stage 1 carries them, else the paper's table.
"""
from __future__ import annotations

import zlib
from typing import Iterable, Mapping, Optional

import numpy as np

from ..core.io import InputError
from ..core.preprocessing import intensity_encoding_value
from ..sequences import INTENSITY_PRIORS, SEQUENCES, Sequence

__all__ = ["INTENSITY_MODES", "INTENSITY_MODE_TITLES", "check_intensity_mode", "check_intensity_seed",
           "model_priors", "two_sigma_draw", "true_intensity", "intensity_values"]

#: The ablation settings, in the paper's order.
INTENSITY_MODES = ("mean", "2sigma", "gt")
#: How the paper's Table 1 names each setting.
INTENSITY_MODE_TITLES: Mapping[str, str] = {"mean": "mean", "2sigma": "2σ", "gt": "GT"}


def check_intensity_mode(mode: object) -> str:
    """``mode`` when it is one of :data:`INTENSITY_MODES`; else a one-line :class:`InputError`."""
    if not isinstance(mode, str) or mode not in INTENSITY_MODES:
        raise InputError(f"--intensity {mode!r}: expected one of {', '.join(INTENSITY_MODES)}")
    return mode


def check_intensity_seed(seed: object) -> int:
    """``seed`` when it is a non-negative integer (what numpy's seeding accepts); else a one-line error."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"--intensity-seed {seed!r}: expected a non-negative integer")
    return int(seed)


def model_priors(bundle) -> dict:
    """``{Sequence: (mean, sigma)}``: the bundle's stage-1 priors over the paper's table."""
    return {**INTENSITY_PRIORS, **(getattr(bundle.stage1, "intensity_priors", None) or {})}


def two_sigma_draw(target: Sequence, priors: Mapping, seed: int, case_id: str) -> float:
    """A draw from ``target``'s normal prior clipped to mean ± 2 sigma (and to [0, 1]).

    The Generator is seeded by (``seed``, CRC-32 of ``case_id``, the target's index), so the value
    depends on nothing but these three.
    """
    mean, sigma = priors[target]
    generator = np.random.default_rng([check_intensity_seed(seed), zlib.crc32(case_id.encode("utf-8")),
                                       SEQUENCES.index(target)])
    value = float(np.clip(generator.normal(mean, sigma), mean - 2.0 * sigma, mean + 2.0 * sigma))
    return float(np.clip(value, 0.0, 1.0))


def true_intensity(prepared, target: Sequence) -> float:
    """The intensity-encoding value of the acquired ``target`` on prepared model-grid inputs
    (:class:`model_grid_inputs.ModelGridInputs` of all four sequences), as training computes it."""
    return intensity_encoding_value(prepared.scaled[target], prepared.brain)


def intensity_values(mode: str, targets: Iterable[Sequence], priors: Mapping, case_id: str, seed: int = 0,
                     prepared=None) -> Optional[dict]:
    """``{target: value}`` for :func:`pipeline.synthesize`'s ``intensity``; None for ``mean`` (its default).

    ``prepared`` (all four sequences on the model grid) is needed for ``gt`` only.
    """
    mode = check_intensity_mode(mode)
    if mode == "mean":
        return None
    if mode == "2sigma":
        return {target: two_sigma_draw(target, priors, seed, case_id) for target in targets}
    if prepared is None:
        raise ValueError("intensity 'gt' needs the prepared inputs of the case")
    return {target: true_intensity(prepared, target) for target in targets}
