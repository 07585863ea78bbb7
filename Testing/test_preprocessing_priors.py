"""The intensity-encoding prior: measured per sequence over training cases (paper section 2.1)."""
from __future__ import annotations

import numpy as np
import pytest

from MRISynthesisLib.core.preprocessing import INTENSITY_PRIORS, estimate_intensity_priors, prior_intensity
from MRISynthesisLib.sequences import Sequence


def test_priors_are_mean_and_std_over_cases_and_fall_back_to_the_paper():
    cases = [{Sequence.T1N: 0.7, Sequence.T1C: 0.4}, {Sequence.T1N: 0.8, Sequence.T1C: 0.5}]
    priors = estimate_intensity_priors(cases)
    assert priors[Sequence.T1N] == pytest.approx((0.75, 0.05))
    assert priors[Sequence.T1C] == pytest.approx((0.45, np.std([0.4, 0.5])))
    assert priors[Sequence.T2W] == INTENSITY_PRIORS[Sequence.T2W]
    assert prior_intensity(Sequence.T1N, 1.0, priors) == pytest.approx(0.8)
    assert prior_intensity(Sequence.T1N) == pytest.approx(0.4332)  # the paper's BraTS table
    assert prior_intensity(Sequence.T1N, 20.0) == 1.0  # clipped to the [0, 1] scale
