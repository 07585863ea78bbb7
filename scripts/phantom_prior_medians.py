#!/usr/bin/env python
"""Do phantom cases match the paper's intensity-encoding prior? Median brain intensity after max scaling.

The two-stage BraSyn paper conditions its generator on the median brain intensity of each
sequence after the volume is scaled to [0, 1] by its maximum, and reports that statistic over
BraTS (``sequences.INTENSITY_PRIORS``). This script generates randomised phantom cases (and,
with ``--classic``, classic ones of the same seeds), measures the same statistic on each
sequence (median over the case's brain mask of ``image / image.max()``) and prints, per
sequence, the mean and standard deviation over cases against the prior, with how many prior
standard deviations the mean is off. Generation times are reported too.

Usage:  python scripts/phantom_prior_medians.py --cases 30 --seed 7000 --grid medium [--classic]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import SimpleITK as sitk

from MRISynthesisLib.phantom import generate_case
from MRISynthesisLib.sequences import INTENSITY_PRIORS, SEQUENCES, SHORT_NAMES, Sequence


def case_medians(seed: int, grid: str, randomise: bool) -> tuple[dict[Sequence, float], float]:
    """Median brain intensity of each sequence on the max-scaled volume, and the generation time (s)."""
    start = time.perf_counter()
    case = generate_case(seed, grid=grid, randomise=randomise)
    elapsed = time.perf_counter() - start
    brain = sitk.GetArrayFromImage(case.tissues["brain"]) > 0
    medians = {}
    for sequence in SEQUENCES:
        volume = sitk.GetArrayFromImage(case.images[sequence])
        medians[sequence] = float(np.median(volume[brain]) / volume.max())
    return medians, elapsed


def summarise(name: str, rows: list[dict[Sequence, float]], times: list[float]) -> list[str]:
    """Table lines: per sequence the prior, the measured mean +- sd and the distance in prior sigmas."""
    lines = [f"{name}: {len(rows)} cases, {np.mean(times):.2f} s per case (median {np.median(times):.2f} s, "
             f"max {np.max(times):.2f} s)",
             f"  {'sequence':8s} {'prior':>15s} {'phantom':>15s} {'sigma off':>9s} {'within 1 sigma':>14s}"]
    for sequence in SEQUENCES:
        prior_mean, prior_sd = INTENSITY_PRIORS[sequence]
        values = np.array([row[sequence] for row in rows])
        off = (values.mean() - prior_mean) / prior_sd
        lines.append(f"  {SHORT_NAMES[sequence]:8s} {prior_mean:.4f} +- {prior_sd:.4f} "
                     f"{values.mean():.4f} +- {values.std():.4f} {off:+9.2f} {'yes' if abs(off) <= 1 else 'NO':>14s}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=30, help="number of cases (default 30)")
    parser.add_argument("--seed", type=int, default=7000, help="seed of the first case (default 7000)")
    parser.add_argument("--grid", choices=("full", "medium", "small"), default="medium",
                        help="phantom grid (default medium)")
    parser.add_argument("--classic", action="store_true", help="also measure classic cases of the same seeds")
    parser.add_argument("--per-case", action="store_true", help="print every case's medians")
    args = parser.parse_args()
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    modes = [("randomised", True)] + ([("classic", False)] if args.classic else [])
    generate_case(args.seed, grid=args.grid, randomise=True)  # load the template outside the timings
    for name, randomise in modes:
        rows, times = [], []
        for seed in range(args.seed, args.seed + args.cases):
            medians, elapsed = case_medians(seed, args.grid, randomise)
            rows.append(medians)
            times.append(elapsed)
            if args.per_case:
                print(f"  {name} {seed}: " + " ".join(f"{SHORT_NAMES[s]} {medians[s]:.3f}" for s in SEQUENCES),
                      flush=True)
        print("\n".join(summarise(f"{name} ({args.grid} grid, seeds {args.seed}-{args.seed + args.cases - 1})",
                                  rows, times)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
