"""How well does the out-of-distribution check tell the training kind of case from others? Counted.

For a bundle with training statistics (``scripts/training_statistics.py``), every case of each
category goes through the check a synthesis runs (:func:`MRISynthesisLib.core.ood_check.
check_distribution`, after the same model-grid preparation) and the cases with at least one warning
are counted:

* ``held-out``: phantoms of the training kind the model never saw (small classic phantoms, seeds
  5000-5019 for the demo model): every warning here is a false alarm. Goal: none;
* ``clinical``: unprepared clinical-like studies (skull on, each series on its own grid; the
  ``mrisynth phantom --clinical`` generator, small). Goal: a warning on every one;
* ``scrambled-flair``: a held-out case whose FLAIR went through a random non-monotonic intensity
  mapping (a piecewise-linear curve through 8 random points);
* ``swapped-t1-t2``: a held-out case with its T1 and T2 files exchanged;
* ``child-size``: a held-out case shrunk by 0.8 along every axis about its centre (half the brain
  volume, a child's brain);
* ``randomised``: randomised phantoms (``--randomised``: other anatomy, scanner physics and
  acquisition) on the same grid: reported, no goal (partly the same kind of images).

    python scripts/ood_check.py --bundle BUNDLE_DIR [--held-out 20] [--others 10] [--output ood.json]
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from MRISynthesisLib.core.bundles import load_bundle  # noqa: E402
from MRISynthesisLib.core.io import InputError  # noqa: E402
from MRISynthesisLib.core.model_grid_inputs import prepare_model_grid_inputs  # noqa: E402
from MRISynthesisLib.core.ood_check import check_distribution  # noqa: E402
from MRISynthesisLib.phantom.cases import generate_case  # noqa: E402
from MRISynthesisLib.phantom.clinical import generate_clinical_study  # noqa: E402
from MRISynthesisLib.sequences import Sequence  # noqa: E402

HELD_OUT_SEED = 5000
CLINICAL_SEED = 7000
RANDOMISED_SEED = 6000


def check(images: dict, bundle):
    """The synthesis's check of ``images``; inputs the model grid cannot take (a whole head wider than the
    model's field of view) are checked on their own grids only."""
    try:
        prepared = prepare_model_grid_inputs(dict(images), [], bundle.stage1)
    except (InputError, ValueError):
        prepared = None
    return check_distribution(images, prepared, bundle.metadata)


def scrambled(image: sitk.Image, seed: int) -> sitk.Image:
    """``image`` through a random non-monotonic curve (8 random points up to its 99.5th percentile); 0 stays 0."""
    rng = np.random.default_rng(seed)
    voxels = sitk.GetArrayFromImage(image).astype(np.float32)
    top = float(np.percentile(voxels[voxels > 0], 99.5))
    knots = np.linspace(0.0, top, 8)
    values = rng.uniform(0.05, 1.0, size=8) * top
    out = np.where(voxels > 0, np.interp(voxels, knots, values), 0.0).astype(np.float32)
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    return result


def shrunk(image: sitk.Image, factor: float = 0.8) -> sitk.Image:
    """``image`` scaled by ``factor`` about its centre, on its own grid (a smaller brain, same voxels)."""
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in image.GetSize()])
    transform = sitk.ScaleTransform(3, [1.0 / factor] * 3)  # maps output points to input points
    transform.SetCenter(centre)
    return sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0)


def categories(held_out: int, others: int, first_seed: int = HELD_OUT_SEED) -> dict:
    """``{name: [(case name, images factory)]}``; images are made when checked (memory)."""
    held = [first_seed + i for i in range(held_out)]
    spare = held[:others]

    def case(seed, **kwargs):
        return dict(generate_case(seed, grid="small", **kwargs).images)

    def flair(seed):
        images = case(seed)
        images[Sequence.T2F] = scrambled(images[Sequence.T2F], seed)
        return images

    def swapped(seed):
        images = case(seed)
        images[Sequence.T1N], images[Sequence.T2W] = images[Sequence.T2W], images[Sequence.T1N]
        return images

    return {
        "held-out": [(f"Phantom-{s:05d}", lambda s=s: case(s)) for s in held],
        "clinical": [(f"clinical-{s}", lambda s=s: dict(generate_clinical_study(s, small=True).images))
                     for s in range(CLINICAL_SEED, CLINICAL_SEED + others)],
        "scrambled-flair": [(f"Phantom-{s:05d}", lambda s=s: flair(s)) for s in spare],
        "swapped-t1-t2": [(f"Phantom-{s:05d}", lambda s=s: swapped(s)) for s in spare],
        "child-size": [(f"Phantom-{s:05d}", lambda s=s: {q: shrunk(i) for q, i in case(s).items()}) for s in spare],
        "randomised": [(f"Phantom-{s:05d}", lambda s=s: case(s, randomise=True))
                       for s in range(RANDOMISED_SEED, RANDOMISED_SEED + others)],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="demo", help="bundle folder or catalogue name (needs training statistics)")
    parser.add_argument("--held-out", type=int, default=20, help="held-out phantoms of the training kind")
    parser.add_argument("--held-out-seed", type=int, default=HELD_OUT_SEED,
                        help="first held-out seed (5020 gives 20 more held-out cases, an independent repeat)")
    parser.add_argument("--others", type=int, default=10, help="cases per other category")
    parser.add_argument("--output", type=Path, default=None, help="write every case's warnings as JSON")
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle)
    started = time.perf_counter()
    rows, details = [], {}
    for name, cases in categories(args.held_out, args.others, args.held_out_seed).items():
        warned, codes = 0, collections.Counter()
        details[name] = {}
        for case_name, make in cases:
            result = check(make(), bundle)
            if not result.checked:
                raise SystemExit(f"{args.bundle}: {result.note}")
            warned += bool(result.warnings)
            codes.update(w.code for w in result.warnings)
            details[name][case_name] = [w.reason for w in result.warnings]
        rows.append((name, len(cases), warned, dict(codes)))
        print(f"{name:16s} {warned:3d}/{len(cases):<3d} warned  {dict(codes)}", flush=True)
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.output:
        args.output.write_text(json.dumps({"bundle": str(args.bundle), "categories": [
            {"category": n, "cases": c, "warned": w, "codes": k} for n, c, w, k in rows], "cases": details},
            indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
