"""Input patterns of the synthesis stages: which other sequences a sample synthesises its target from.

:data:`~.options.INPUT_PATTERNS` names the schemes: ``hfgan`` draws one to three inputs as
HF-GAN trains, ``missing-one`` always the other three.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from ..sequences import SEQUENCES, Sequence
from .options import check_input_patterns

__all__ = ["sample_pattern", "all_patterns", "input_sets"]


def _multi_patterns(target: Sequence) -> list:
    """Input patterns of more than one sequence for ``target`` (the pairs and the triple)."""
    others = [s for s in SEQUENCES if s != target]
    return [c for size in (2, 3) for c in combinations(others, size)]


def sample_pattern(rng: np.random.Generator, target: Sequence, scheme: str = "hfgan",
                   single_fraction: float = 0.5) -> tuple:
    """Random available inputs for ``target``: one to three other sequences, in canonical order.

    ``hfgan`` (HF-GAN training): half the samples have a single input and half two or three
    (each of the three pairs and the triple equally likely). ``missing-one``: the other three.
    """
    others = [s for s in SEQUENCES if s != target]
    check_input_patterns(scheme)
    if scheme == "missing-one":
        return tuple(others)
    if rng.random() < single_fraction:
        return (others[int(rng.integers(len(others)))],)
    patterns = _multi_patterns(target)
    return patterns[int(rng.integers(len(patterns)))]


def all_patterns(target: Sequence) -> list:
    """The seven non-empty input sets for ``target`` (canonical order)."""
    others = [s for s in SEQUENCES if s != target]
    return [c for size in (1, 2, 3) for c in combinations(others, size)]


def input_sets(target: Sequence, scheme: str = "hfgan") -> list:
    """The input sets a scheme trains ``target`` from: all seven (``hfgan``) or the other three."""
    check_input_patterns(scheme)
    patterns = all_patterns(target)
    return patterns if scheme == "hfgan" else patterns[-1:]
