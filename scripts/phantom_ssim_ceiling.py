#!/usr/bin/env python
"""How high can synthesis score on phantoms at all? SSIM of ideal images against the acquired ones.

A synthetic image cannot know the Rician noise or the bias field of the acquisition it
stands in for: both are drawn independently per sequence. So even a perfect model is scored
below 1. For each phantom case this regenerates the very same case without noise (and
without noise and bias field) and scores those ideal images against the acquired ones with
the metric `mrisynth evaluate` uses (``metrics.image_metrics`` over the brain). With
``--model-size N`` it also passes the noise-free image through an N x N model grid (240 mm
field of view) and back, the resolution a demo model works at.

Usage:  python scripts/phantom_ssim_ceiling.py --seed 5000 --cases 5 [--small] [--model-size 96]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import SimpleITK as sitk

from MRISynthesisLib.metrics import image_metrics
from MRISynthesisLib.phantom import generate_case
from MRISynthesisLib.core.model_grid_inputs import MODEL_FIELD_OF_VIEW_MM
from MRISynthesisLib.core.preprocessing import ModelGrid, brain_mask
from MRISynthesisLib.sequences import SEQUENCES


def model_grid_round_trip(image: sitk.Image, brain: np.ndarray, size: int) -> np.ndarray:
    """``image`` taken to a ``size`` x ``size`` model grid over 240 mm and back, as the pipeline does."""
    grid = ModelGrid.plan(image, brain, slice_shape=(size, size), axial_spacing=MODEL_FIELD_OF_VIEW_MM / size)
    return sitk.GetArrayFromImage(grid.from_model(grid.to_model(image)))


def case_ceilings(seed: int, small: bool, model_size: int | None) -> dict:
    """``{(sequence, kind): SSIM}`` of the ideal images of one case against its acquired images."""
    acquired = generate_case(seed, small=small)
    noise_free = generate_case(seed, small=small, noise=False)
    ideal = generate_case(seed, small=small, noise=False, bias=False)
    arrays = {s: sitk.GetArrayFromImage(acquired.images[s]) for s in SEQUENCES}
    brain = brain_mask(list(arrays.values()))
    scores = {}
    for sequence in SEQUENCES:
        candidates = {"noise-free": sitk.GetArrayFromImage(noise_free.images[sequence]),
                      "noise- and bias-free": sitk.GetArrayFromImage(ideal.images[sequence])}
        if model_size:
            candidates[f"noise-free via {model_size}^2 grid"] = model_grid_round_trip(
                noise_free.images[sequence], brain, model_size)
        for kind, array in candidates.items():
            scores[(sequence.value, kind)] = image_metrics(arrays[sequence], array, brain)["ssim"]
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=5000, help="seed of the first case (default 5000)")
    parser.add_argument("--cases", type=int, default=5, help="number of cases (default 5)")
    parser.add_argument("--small", action="store_true", help="small 2.5 mm phantoms (as the demo model's data)")
    parser.add_argument("--model-size", type=int, default=None, help="also round-trip through this model grid")
    args = parser.parse_args()
    per_case = [case_ceilings(args.seed + i, args.small, args.model_size) for i in range(args.cases)]
    kinds = list(dict.fromkeys(kind for _, kind in per_case[0]))
    grid = "small, 2.5 mm" if args.small else "full size, 1 mm"
    print(f"Whole-brain SSIM of ideal images against the acquired ones, mean (min) over "
          f"{args.cases} phantoms, seeds {args.seed}-{args.seed + args.cases - 1} ({grid}):\n")
    print("| ideal image | " + " | ".join(s.value for s in SEQUENCES) + " |")
    print("|---|" + "---|" * len(SEQUENCES))
    for kind in kinds:
        cells = []
        for sequence in SEQUENCES:
            values = [scores[(sequence.value, kind)] for scores in per_case]
            cells.append(f"{np.mean(values):.3f} ({np.min(values):.3f})")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
