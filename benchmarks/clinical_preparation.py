"""How well a clinical-like study is prepared for the model, and what preparing costs.

On clinical-like phantom studies (``phantom.generate_clinical_study``: a head with skull and
scalp, each sequence on its own grid and orientation, a known rigid motion per series), this
measures in one run:

* **precondition check**: the share of unprepared clinical-like studies it flags (goal 100 %)
  and of BraTS-space versions of the same cases it flags (goal 0 %);
* **co-registration**: mean and largest target registration error over brain voxels of each
  series against its known motion (goal: mean < 1 mm);
* **synthesis after preparation** (the true brain mask as the brain-extraction backend): SSIM of
  the synthetic T1c inside the brain against the true T1c, compared with the same case
  synthesised from its BraTS-space version (goal: within 0.02). Both are scored on the model-space
  grid (the BraTS-space version is moved there with the true motion): scores on different grids
  differ by the interpolation alone (about 0.06 at 2.5 mm);
* **time**: bias correction, registration, brain extraction and resampling per case.

    python benchmarks/clinical_preparation.py --cases 20 --synthesis-cases 3 --output-dir out/clinical [--small]

Full-size studies take about half a minute each to generate and a few minutes to prepare on
two cores; ``--small`` uses the small phantoms (2 mm 3D series) for a quick run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from MRISynthesisLib.clinical.preconditions import check_preconditions  # noqa: E402
from MRISynthesisLib.clinical.prepare import prepare_study  # noqa: E402
from MRISynthesisLib.clinical.registration import mask_points, target_registration_error  # noqa: E402
from MRISynthesisLib.core.pipeline import synthesize  # noqa: E402
from MRISynthesisLib.metrics import image_metrics  # noqa: E402
from MRISynthesisLib.phantom import generate_clinical_study  # noqa: E402
from MRISynthesisLib.sequences import Sequence  # noqa: E402

TARGET = Sequence.T1C


def registration_errors(study, prepared) -> dict:
    """TRE of each series' estimated transform (reference -> series) against the truth, over brain voxels.

    True reference -> series mapping: brain -> series composed with reference -> brain (the inverse of
    the reference's brain -> reference transform); points: brain voxels of the reference series.
    """
    reference = prepared.reference
    truth = study.transforms
    points_brain = mask_points(study.brain_mask, max_points=20000)
    to_reference = truth[reference]
    points = np.array([to_reference.TransformPoint(tuple(map(float, p))) for p in points_brain])
    errors = {}
    for sequence, registration in prepared.registrations.items():
        true = sitk.CompositeTransform([truth[sequence], truth[reference].GetInverse()])
        found = target_registration_error(registration.transform, true, points)
        errors[sequence.value] = {"mean_mm": round(float(found.mean_mm), 3), "max_mm": round(float(found.max_mm), 3)}
    return errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--synthesis-cases", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--bias-correction", action="store_true", help="prepare with N4 (off by default, as in the CLI)")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--output-dir", type=Path, default=Path("out/clinical"))
    args = parser.parse_args(argv)
    from MRISynthesisLib.clinical.prepare import model_spacing_of
    from MRISynthesisLib.core.bundles import load_bundle

    spacing = model_spacing_of(load_bundle(args.model))
    rows = []
    for index in range(args.cases):
        seed = args.first_seed + index
        study = generate_clinical_study(seed, small=args.small)
        clinical_flags = check_preconditions(study.images).problems
        brats_flags = check_preconditions(study.brats.images).problems
        row = {"seed": seed, "clinical_flagged": bool(clinical_flags), "brats_flagged": bool(brats_flags),
               "brats_problems": brats_flags}
        if index < args.synthesis_cases:
            acquired = {s: image for s, image in study.images.items() if s is not TARGET}
            mask = study.primary(Sequence.T1N).brain_mask  # the true brain, on the T1 grid
            prepared = prepare_study(acquired, brain_mask=mask, spacing_mm=spacing, bias_correction=args.bias_correction)
            row["timings_s"] = {k: round(v, 2) for k, v in prepared.timings.items()}
            row["registration_error"] = registration_errors(study, prepared)
            # both runs are scored on the same grid against the same truth: the model space, where the prepared
            # study is synthesised; the BraTS-space version goes there through the true motion of the reference
            grid, into_model = prepared.images[prepared.reference], study.transforms[prepared.reference].GetInverse()
            truth = sitk.GetArrayFromImage(sitk.Resample(study.brats.images[TARGET], grid, into_model,
                                                         sitk.sitkLinear, 0.0))
            brain = sitk.GetArrayFromImage(prepared.brain_mask) > 0
            brats_version = {s: sitk.Resample(study.brats.images[s], grid, into_model, sitk.sitkLinear, 0.0)
                             for s in acquired}
            for key, images in (("ssim_after_prepare", prepared.images), ("ssim_brats_version", brats_version)):
                made = synthesize(images, args.model, targets=[TARGET], device="cpu").targets[TARGET].synthetic
                row[key] = float(image_metrics(truth, sitk.GetArrayFromImage(made), brain)["ssim"])
            native = synthesize({s: study.brats.images[s] for s in acquired}, args.model, targets=[TARGET],
                                device="cpu").targets[TARGET].synthetic
            row["ssim_brats_on_its_grid"] = float(image_metrics(
                sitk.GetArrayFromImage(study.brats.images[TARGET]), sitk.GetArrayFromImage(native),
                sitk.GetArrayFromImage(study.brain_mask) > 0)["ssim"])
        rows.append(row)
        print(json.dumps(row))
    flagged = sum(r["clinical_flagged"] for r in rows)
    false_flags = sum(r["brats_flagged"] for r in rows)
    prepared_rows = [r for r in rows if "registration_error" in r]
    lines = [f"{len(rows)} cases ({'small' if args.small else 'full-size'} phantoms, seeds {args.first_seed}-"
             f"{args.first_seed + len(rows) - 1})",
             f"precondition check: flags {flagged}/{len(rows)} unprepared clinical-like studies (goal all), "
             f"{false_flags}/{len(rows)} BraTS-space cases (goal none)"]
    if prepared_rows:
        for sequence in prepared_rows[0]["registration_error"]:
            means = [r["registration_error"][sequence]["mean_mm"] for r in prepared_rows]
            worst = max(r["registration_error"][sequence]["max_mm"] for r in prepared_rows)
            lines.append(f"registration {sequence} -> reference: mean TRE {np.mean(means):.2f} mm (worst case mean "
                         f"{max(means):.2f} mm, largest point error {worst:.2f} mm)")
        gaps = [r["ssim_brats_version"] - r["ssim_after_prepare"] for r in prepared_rows]
        lines.append(f"T1c SSIM in the model space, after --prepare {np.mean([r['ssim_after_prepare'] for r in prepared_rows]):.3f}"
                     f" vs from the BraTS-space version {np.mean([r['ssim_brats_version'] for r in prepared_rows]):.3f}: "
                     f"gap mean {np.mean(gaps):+.3f}, worst {max(gaps):+.3f} (goal within 0.02) over "
                     f"{len(prepared_rows)} cases")
        lines.append(f"(for reference: the BraTS-space version on its own grid scores "
                     f"{np.mean([r['ssim_brats_on_its_grid'] for r in prepared_rows]):.3f}; the model-space grid "
                     "differs, so the two are not comparable)")
        for key in prepared_rows[0]["timings_s"]:
            lines.append(f"time {key}: {np.mean([r['timings_s'][key] for r in prepared_rows]):.1f} s per case")
    text = "\n".join(lines)
    print(text)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "clinical_preparation.txt").write_text(text + "\n", encoding="utf-8")
    (args.output_dir / "clinical_preparation.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    started = time.time()
    code = main()
    print(f"({time.time() - started:.0f} s)")
    sys.exit(code)
