#!/usr/bin/env python
"""Reproduce the bundled demo model: phantom data -> stage 1 -> segmenter -> stage 2 -> evaluation.

Runs on a 2-core CPU in under 90 minutes (the time budgets below add up to about 80) and
writes the bundle, its evaluation and the model card to MRISynthesisLib/data/models/demo/.
Usage:  python scripts/train_demo_model.py [--work-dir runs/demo-model] [--minutes-scale 1.0]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "MRISynthesisLib" / "data" / "models" / "demo"

TRAIN_SEED, TRAIN_CASES = 1000, 16       # Phantom-01000 ... Phantom-01015
EVAL_SEED, EVAL_CASES = 5000, 5          # held out: Phantom-05000 ... Phantom-05004
DEMO_SEED = 90210                        # the case `mrisynth demo` shows
IMAGE_SIZE = 120                         # 2 mm in-plane over the 240 mm field of view
BUDGET_MINUTES = {"stage1": 50.0, "segmenter": 8.0, "stage2": 7.0}
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
        mrisynth("phantom", "-o", str(data), "--cases", str(TRAIN_CASES), "--seed", str(TRAIN_SEED))
    if not held_out.exists():
        mrisynth("phantom", "-o", str(held_out), "--cases", str(EVAL_CASES), "--seed", str(EVAL_SEED))
    budget = {k: f"{v * args.minutes_scale:.2f}" for k, v in BUDGET_MINUTES.items()}
    # A stage whose network is already in the run folder is not trained again (re-run to continue).
    if not (run / "stage1.pt").exists():
        mrisynth("train", "stage1", "--data", str(data), "-o", str(run), "--config", "small",
                 "--image-size", str(IMAGE_SIZE), "--batch-size", "8", "--epochs", "6", "--steps-per-epoch", "150",
                 "--lr", "2e-4", "--warmup-steps", "50", "--val-cases", "1", "--val-targets", "t1c",
                 "--max-minutes", budget["stage1"], "--seed", "0", "--threads", THREADS)
    if not (run / "segmenter.pt").exists():
        mrisynth("train", "segmenter", "--data", str(data), "-o", str(run), "--config", "small",
                 "--batch-size", "2", "--crop-size", "64", "--epochs", "4", "--steps-per-epoch", "60",
                 "--max-minutes", budget["segmenter"], "--seed", "0", "--threads", THREADS)
    if not (run / "refiner.pt").exists():
        mrisynth("train", "stage2", "--data", str(data), "-o", str(run), "--config", "small",
                 "--batch-size", "1", "--crop-size", "64", "--epochs", "4", "--steps-per-epoch", "60",
                 "--val-targets", "t1c", "--max-minutes", budget["stage2"], "--seed", "0", "--threads", THREADS)
    mrisynth("evaluate", "--data", str(held_out), "--model", str(run), "-o", str(run / "evaluation"),
             "--device", "cpu")
    minutes = (time.time() - started) / 60.0
    manifest_path = run / "bundle.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(name="demo", description="Demo model trained on simulated phantoms (not for patient data)")
    manifest.setdefault("metadata", {}).update(
        training_seeds=[TRAIN_SEED, TRAIN_SEED + TRAIN_CASES - 1],
        evaluation_seeds=[EVAL_SEED, EVAL_SEED + EVAL_CASES - 1], demo_seed=DEMO_SEED,
        image_size=IMAGE_SIZE, training_minutes=round(minutes, 1),
        command="python scripts/train_demo_model.py")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"trained and evaluated in {minutes:.1f} min", flush=True)
    if not args.no_install:
        install(run)
    return 0


def install(run: Path) -> None:
    """Copy the bundle and its evaluation into the package and write the model card."""
    manifest = json.loads((run / "bundle.json").read_text())
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    for name in ["bundle.json", *manifest["files"].values()]:
        shutil.copy2(run / name, DEMO_DIR / name)
    evaluation = (run / "evaluation" / "evaluation.md").read_text()
    (DEMO_DIR / "evaluation.md").write_text(evaluation)
    (DEMO_DIR / "MODEL_CARD.md").write_text(model_card(manifest, run, evaluation))
    print(f"installed into {DEMO_DIR}")


def model_card(manifest: dict, run: Path, evaluation: str) -> str:
    """The model card: what the demo model is, how it was made, how well it does, what it is not."""
    import torch

    meta = manifest.get("metadata", {})
    sizes = []
    for kind, name in manifest["files"].items():
        payload = torch.load(run / name, map_location="cpu", weights_only=True)
        count = sum(v.numel() for v in payload["state_dict"].values() if v.is_floating_point())
        sizes.append(f"| {kind} | `{json.dumps(payload['config'])}` | {count:,} |")
    return f"""# MRISynthesis demo model

**Trained on simulated phantoms only. Not for real patient data, not for diagnosis.** It exists so
that every new user can see the whole extension work offline on a CPU; real use needs a bundle
trained on real BraTS-format data (`mrisynth train ...`).

- **Method**: two-stage BraSyn 2024 approach: 2D HF-GAN with intensity encoding (stage 1), 3D
  Refiner (stage 2), SegResNet tumour segmenter for the refiner's Dice loss and the tumour maps.
- **Model grid**: axial slices of {meta.get('image_size', IMAGE_SIZE)} x {meta.get('image_size', IMAGE_SIZE)}
  over a 240 mm field of view (2 mm in-plane; the paper model uses 240 x 240 at 1 mm).
- **Training data**: {TRAIN_CASES} full-size MR-physics phantom cases (`mrisynth phantom`, seeds
  {meta.get('training_seeds')}), ICBM152 2009a anatomy with random tumours, tissue and protocol
  jitter, bias field, Rician noise and deformation. One case held out for validation.
- **Evaluation data**: {EVAL_CASES} held-out phantom cases (seeds {meta.get('evaluation_seeds')});
  the demo case uses seed {meta.get('demo_seed')}, which is in neither set.
- **Command**: `{meta.get('command', 'python scripts/train_demo_model.py')}` on a 2-core CPU
  ({meta.get('training_minutes', '?')} minutes in all, including data generation and evaluation).

| network | config | parameters |
|---|---|---|
{chr(10).join(sizes)}

## Measured on the held-out phantoms

{evaluation}
"""


if __name__ == "__main__":
    sys.exit(main())
