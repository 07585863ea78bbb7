#!/usr/bin/env python
"""Reproduce the demo model bundled before #16 (2.5 mm, classic phantoms): phantom data -> stage 1 ->
segmenter -> stage 2 -> evaluation. The bundled model is now ``scripts/train_randomised_model.py``'s, which
imports this script's shared steps and card sections.

Runs on a 2-core CPU in under 90 minutes (the time budgets below add up to 73) and writes the
bundle, its evaluation and the model card to MRISynthesisLib/data/models/demo/. The model
works on the grid of the small phantoms (2.5 mm), which keeps training within that budget.
Usage:  python scripts/train_demo_model.py [--work-dir runs/demo-model] [--minutes-scale 1.0]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "MRISynthesisLib" / "data" / "models" / "demo"

TRAIN_SEED, TRAIN_CASES = 1000, 40       # Phantom-01000 ... Phantom-01039 (small grid)
EVAL_SEED, EVAL_CASES = 5000, 5          # held out: Phantom-05000 ... Phantom-05004
DEMO_SEED = 90210                        # the case `mrisynth demo` shows
IMAGE_SIZE = 96                          # 2.5 mm in-plane over 240 mm: the small phantom grid itself
BUDGET_MINUTES = {"stage1": 58.0, "segmenter": 8.0, "stage2": 9.0}
#: Half of every stage-1 batch from slices with tumour core, so that the short run learns enhancement.
TUMOUR_FRACTION = 0.5
THREADS = "1"  # one torch thread is never slowed by a busy machine; two are faster only when it is idle


def mrisynth(*arguments: str) -> None:
    """Run one mrisynth command, echoing it, and stop on failure."""
    command = [sys.executable, "-m", "MRISynthesisLib.cli", *arguments]
    print("$ mrisynth " + " ".join(arguments), flush=True)
    subprocess.run(command, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "demo-model")
    parser.add_argument("--minutes-scale", type=float, default=1.0,
                        help="multiply every training budget (e.g. 0.1 for a smoke run)")
    parser.add_argument("--no-install", action="store_true", help="do not copy the bundle into the package")
    parser.add_argument("--install-only", action="store_true",
                        help="skip training: install an already trained and evaluated run and write the model card")
    args = parser.parse_args()
    started = time.time()
    data, held_out, run = args.work_dir / "train", args.work_dir / "eval", args.work_dir / "run"
    if args.install_only:
        install(run)
        return 0
    if not data.exists():
        mrisynth("phantom", "-o", str(data), "--cases", str(TRAIN_CASES), "--seed", str(TRAIN_SEED), "--small")
    if not held_out.exists():
        mrisynth("phantom", "-o", str(held_out), "--cases", str(EVAL_CASES), "--seed", str(EVAL_SEED), "--small")
    budget = {k: f"{v * args.minutes_scale:.2f}" for k, v in BUDGET_MINUTES.items()}
    # A stage whose network is already in the run folder is not trained again (re-run to continue).
    if not (run / "stage1.pt").exists():
        mrisynth("train", "stage1", "--data", str(data), "-o", str(run), "--config", "small",
                 "--image-size", str(IMAGE_SIZE), "--batch-size", "8", "--epochs", "10", "--steps-per-epoch", "200",
                 "--lr", "4e-4", "--warmup-steps", "100", "--input-patterns", "missing-one",
                 "--tumour-fraction", str(TUMOUR_FRACTION), "--val-cases", "2", "--keep", "best",
                 "--max-minutes", budget["stage1"], "--seed", "0", "--threads", THREADS)
    if not (run / "segmenter.pt").exists():
        mrisynth("train", "segmenter", "--data", str(data), "-o", str(run), "--config", "small",
                 "--batch-size", "2", "--crop-size", "48", "--epochs", "6", "--steps-per-epoch", "80",
                 "--lr", "1e-3", "--warmup-steps", "30",
                 "--max-minutes", budget["segmenter"], "--seed", "0", "--threads", THREADS)
    if not (run / "refiner.pt").exists():
        mrisynth("train", "stage2", "--data", str(data), "-o", str(run), "--config", "small",
                 "--batch-size", "1", "--crop-size", "64", "--epochs", "3", "--steps-per-epoch", "16",
                 "--lr", "5e-4", "--warmup-steps", "20", "--input-patterns", "missing-one", "--val-targets", "t1c",
                 "--max-minutes", budget["stage2"], "--seed", "0", "--threads", THREADS)
    add_training_statistics(run, data)
    evaluation_started = time.time()
    mrisynth("evaluate", "--data", str(held_out), "--model", str(run), "-o", str(run / "evaluation"),
             "--device", "cpu")
    evaluation_minutes = (time.time() - evaluation_started) / 60.0
    stage_minutes = {kind: training_minutes(run, kind) for kind in BUDGET_MINUTES}
    minutes = sum(stage_minutes.values()) + evaluation_minutes
    manifest_path = run / "bundle.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(name="demo", description="Demo model trained on simulated phantoms (not for patient data)")
    manifest.setdefault("metadata", {}).update(
        training_seeds=[TRAIN_SEED, TRAIN_SEED + TRAIN_CASES - 1],
        evaluation_seeds=[EVAL_SEED, EVAL_SEED + EVAL_CASES - 1], demo_seed=DEMO_SEED,
        image_size=IMAGE_SIZE, training_minutes=round(minutes, 1),
        minutes_per_stage={**{k: round(v, 1) for k, v in stage_minutes.items()},
                           "evaluation": round(evaluation_minutes, 1)},
        command="python scripts/train_demo_model.py")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"trained and evaluated in {minutes:.1f} min (this call: {(time.time() - started) / 60.0:.1f} min)",
          flush=True)
    if not args.no_install:
        install(run)
    return 0


def add_training_statistics(run: Path, data: Path) -> None:
    """What the training cases look like to the model, stored in the run's bundle.json for the
    out-of-distribution check (``scripts/training_statistics.py``; kept when already there)."""
    if "training_statistics" in json.loads((run / "bundle.json").read_text()).get("metadata", {}):
        return
    subprocess.run([sys.executable, str(REPO / "scripts" / "training_statistics.py"), "--data", str(data),
                    "--bundle", str(run)], check=True)


def trust_section(bundle: Path, held_out: Path, work: Path) -> str:
    """The card's section on where not to trust the model: the uncertainty map's calibration on the held-out
    cases (``scripts/uncertainty_calibration.py``, 4 members; kept in ``work/uncertainty-calibration``) and the
    out-of-distribution check's counts (``scripts/ood_check.py``; kept in ``work/ood-check.txt``)."""
    calibration = work / "uncertainty-calibration"
    if not (calibration / "calibration.md").exists():
        subprocess.run([sys.executable, str(REPO / "scripts" / "uncertainty_calibration.py"), "--data", str(held_out),
                        "--model", str(bundle), "--samples", "4", "-o", str(calibration)], check=True,
                       capture_output=True, text=True)
    ood = work / "ood-check.txt"
    if not ood.exists():
        printed = subprocess.run([sys.executable, str(REPO / "scripts" / "ood_check.py"), "--bundle", str(bundle)],
                                 check=True, capture_output=True, text=True).stdout
        ood.write_text(printed, encoding="utf-8")
    table = calibration_body((calibration / "calibration.md").read_text(encoding="utf-8"))
    counts = ood.read_text(encoding="utf-8").strip()
    return f"""## Where not to trust it: uncertainty map and out-of-distribution check

The uncertainty map (`--uncertainty 4`) against the error on the classic held-out cases below
(`python scripts/uncertainty_calibration.py --data HELD_OUT_CASES --model demo --samples 4`).
{table}
The out-of-distribution check with the training statistics in `bundle.json` (cases with at least one
warning per category; `python scripts/ood_check.py --bundle MRISynthesisLib/data/models/demo`; the
held-out row counts false alarms):

```
{counts}
```
"""


def calibration_body(markdown: str) -> str:
    """calibration.md without its title, its data folder and its calibration heading (the card has its own)."""
    drop = ("# ", "## Uncertainty map: calibration")
    lines = [line for line in markdown.splitlines() if not line.startswith(drop) and " case(s) from " not in line]
    return "\n" + re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def training_minutes(run: Path, kind: str) -> float:
    """Wall minutes of the epochs (with validation) in ``RUN/<kind>-metrics.json``, also across resumed calls."""
    history = json.loads((run / f"{kind}-metrics.json").read_text())
    return sum(float(row.get("epoch_s") or 0.0) + float(row.get("val_s") or 0.0) for row in history) / 60.0


def install(run: Path) -> None:
    """Copy the bundle and its evaluation into the package and write the model card."""
    manifest = json.loads((run / "bundle.json").read_text())
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    for name in ["bundle.json", *manifest["files"].values()]:
        shutil.copy2(run / name, DEMO_DIR / name)
    evaluation = (run / "evaluation" / "evaluation.md").read_text()
    (DEMO_DIR / "evaluation.md").write_text(evaluation)
    trust = trust_section(run, run.parent / "eval", run)
    (DEMO_DIR / "MODEL_CARD.md").write_text(model_card(manifest, run, evaluation, ssim_ceiling(),
                                                        enhancement(run), intensity_response(run), bottleneck(run),
                                                        trust))
    print(f"installed into {DEMO_DIR}")


def enhancement(run: Path) -> str:
    """The table of scripts/enhancement_contrast.py for the held-out cases: does the synthetic T1c enhance?"""
    command = [sys.executable, str(REPO / "scripts" / "enhancement_contrast.py"), "--data",
               str(run.parent / "eval"), "--model", str(run)]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def first_held_out_case(run: Path) -> Path:
    """The first held-out case folder beside the run (``WORK_DIR/eval``), for the model card's single-case checks."""
    return sorted(p for p in (run.parent / "eval").iterdir() if p.is_dir())[0]


def bottleneck(run: Path) -> str:
    """The table of scripts/bottleneck_use.py for the first held-out case: is the condition's path used?"""
    command = [sys.executable, str(REPO / "scripts" / "bottleneck_use.py"), str(first_held_out_case(run)),
               "--model", str(run)]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def intensity_response(run: Path) -> str:
    """How much the synthetic T1c of the first held-out case moves when its intensity code does."""
    import numpy as np
    import SimpleITK as sitk

    from MRISynthesisLib.core.io import read_case
    from MRISynthesisLib.core.pipeline import synthesize
    from MRISynthesisLib.sequences import SEQUENCES, Sequence
    from MRISynthesisLib.core.bundles import load_bundle

    folder = first_held_out_case(run)
    images = read_case(folder)
    inputs = {s: images[s] for s in SEQUENCES if s != Sequence.T1C}
    bundle = load_bundle(run)
    mean, std = bundle.stage1.intensity_priors[Sequence.T1C]
    medians = {}
    for k_sigma in (-2, 2):
        result = synthesize(inputs, bundle, targets=[Sequence.T1C], intensity=f"{k_sigma:+d}sigma", tumour_maps=False,
                            device="cpu")
        synthetic = sitk.GetArrayFromImage(result.targets[Sequence.T1C].synthetic)
        medians[k_sigma] = float(np.median(synthetic[synthetic > 0]))
    change = abs(medians[2] - medians[-2]) / max(abs(medians[-2]), 1e-12)
    return (f"Conditioning the T1c of {folder.name} on the prior mean - 2 sigma and + 2 sigma "
            f"({mean - 2 * std:.3f} and {mean + 2 * std:.3f}) changes the median brain intensity of the synthetic "
            f"image by {100 * change:.2g} %.")


def ssim_ceiling() -> str:
    """The table of scripts/phantom_ssim_ceiling.py for the held-out cases: what a perfect model would score."""
    command = [sys.executable, str(REPO / "scripts" / "phantom_ssim_ceiling.py"), "--seed", str(EVAL_SEED),
               "--cases", str(EVAL_CASES), "--small"]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def kept_epochs_and_sizes(manifest: dict, run: Path) -> tuple:
    """The card's lines on which epoch each network kept, and its table rows of configs and parameter counts."""
    from MRISynthesisLib.core.checkpoints import read_checkpoint

    meta = manifest.get("metadata", {})
    kept = []
    for kind, record in meta.get("training", {}).items():
        choice = record.get("kept", {})
        how = (f"epoch {choice['epoch']} of {record.get('epochs')}, best {choice['selected_by']} "
               f"{choice['score']:.4f}" if choice.get("keep") == "best" else
               f"its last epoch, {record.get('epochs')}")
        kept.append(f"{kind}: {how}")
    sizes = []
    for kind, name in manifest["files"].items():
        payload = read_checkpoint(run / name)
        count = sum(v.numel() for v in payload["state_dict"].values() if v.is_floating_point())
        sizes.append(f"| {kind} | `{json.dumps(payload['config'])}` | {count:,} |")
    return kept, sizes


def card_introduction(size: int) -> str:
    """The model card's opening: what the model is not for, the method, the model grid (``size`` pixels a side)."""
    return f"""**Trained on simulated phantoms only. Not for real patient data, not for diagnosis.** It exists so
that every new user can see the whole extension work offline on a CPU; real use needs a bundle
trained on real BraTS-format data (`mrisynth train ...`).

- **Method**: two-stage BraSyn 2024 approach: 2D HF-GAN with intensity encoding (stage 1), 3D
  Refiner (stage 2), SegResNet tumour segmenter for the refiner's Dice loss and the tumour maps.
  The paper's losses and weights; small network sizes (`--config small`). Stage 1 always sees
  the other three sequences (`--input-patterns missing-one`, the BraSyn task) rather than HF-GAN's
  one-to-three inputs: on this budget that learns the one-missing case far better, but the model
  is weaker when two sequences are missing. Half of every stage-1 batch comes from slices with
  tumour core (`--tumour-fraction {TUMOUR_FRACTION}`), so that the short run learns enhancement.
- **Model grid**: axial slices of {size} x {size} over a 240 mm field of view
  ({240 / size:g} mm in-plane; the paper model uses 240 x 240 at 1 mm). Full-size 1 mm cases,
  such as the one `mrisynth demo` shows, are resampled to this grid and back, which blurs them.
"""


def model_card(manifest: dict, run: Path, evaluation: str, ceiling: str, enhancement_table: str,
               intensity_note: str, bottleneck_table: str, trust: str) -> str:
    """The model card: what the demo model is, how it was made, how well it does, what it is not."""
    meta = manifest.get("metadata", {})
    size = int(meta.get("image_size", IMAGE_SIZE))
    per_stage = ", ".join(f"{kind} {minutes} min" for kind, minutes in meta.get("minutes_per_stage", {}).items())
    validation = json.loads((run / "split.json").read_text())["validation"]
    kept, sizes = kept_epochs_and_sizes(manifest, run)
    return f"""# MRISynthesis demo model

{card_introduction(size)}- **Training data**: {TRAIN_CASES} small MR-physics phantom cases (`mrisynth phantom --small`,
  96 x 96 x 64 voxels of 2.5 mm; seeds {meta.get('training_seeds')}): ICBM152 2009a anatomy with
  random tumours, tissue and protocol jitter, bias field, Rician noise and deformation.
  {len(validation)} of them ({', '.join(validation)}) are held out for validation after every epoch,
  and each network keeps its best-validated epoch:
{chr(10).join(f"  - {line}" for line in kept)}
- **Evaluation data**: {EVAL_CASES} held-out small phantom cases (seeds {meta.get('evaluation_seeds')});
  the demo case uses seed {meta.get('demo_seed')}, which is in neither set.
- **Command**: `{meta.get('command', 'python scripts/train_demo_model.py')}` on a 2-core CPU
  ({meta.get('training_minutes', '?')} minutes of training and evaluation in all; per stage: {per_stage}).

| network | config | parameters |
|---|---|---|
{chr(10).join(sizes)}

## What any model could reach on these phantoms

A synthetic image cannot know the noise or the bias field of the acquisition it replaces
(both are drawn independently per sequence), so even a perfect model scores below 1. These are
the held-out cases regenerated without noise (and without bias field) and scored like the
synthesis (`python scripts/phantom_ssim_ceiling.py --seed {EVAL_SEED} --cases {EVAL_CASES} --small`):

{ceiling}

## Does the synthetic T1c show enhancement?

Mean over the enhancing tumour / median over healthy brain, T1c synthesised from the other three
(`python scripts/enhancement_contrast.py --data HELD_OUT_CASES --model demo`); SSIM hides this,
the enhancing tumour being a few percent of the brain:

{enhancement_table}

{trust}
## Known limitations

- **The intensity code has almost no effect in this model.** {intensity_note} The code enters
  with the target's one-hot at the transformer bottleneck. Trained with every other sequence
  present (`missing-one`), the blank input channel already names the target, so the condition
  is redundant. The decoder then learns to take nearly everything from the encoder's skip
  connections and ignores the bottleneck (an untrained generator's output moves by more than
  half when it is zeroed). `mrisynth synthesize --intensity` therefore changes little, and
  slice-to-slice intensity steps (stripes in coronal and sagittal views) remain. On the first
  held-out case (`python scripts/bottleneck_use.py CASE_DIR --model demo`):

{bottleneck_table}

- The 2.5 mm grid blurs the 1 mm demo case, and a case from a real scanner is outside what these
  phantoms cover.

## Measured on the held-out phantoms (`mrisynth evaluate`)

{evaluation}
"""


if __name__ == "__main__":
    sys.exit(main())
