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
BUDGET_MINUTES = {"stage1": 50.0, "segmenter": 8.0, "stage2": 12.0}
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
    args = parser.parse_args()
    started = time.time()
    data, held_out, run = args.work_dir / "train", args.work_dir / "eval", args.work_dir / "run"
    if not data.exists():
        mrisynth("phantom", "-o", str(data), "--cases", str(TRAIN_CASES), "--seed", str(TRAIN_SEED))
    if not held_out.exists():
        mrisynth("phantom", "-o", str(held_out), "--cases", str(EVAL_CASES), "--seed", str(EVAL_SEED))
    budget = {k: f"{v * args.minutes_scale:.2f}" for k, v in BUDGET_MINUTES.items()}
    mrisynth("train", "stage1", "--data", str(data), "-o", str(run), "--config", "small",
             "--image-size", str(IMAGE_SIZE), "--batch-size", "8", "--epochs", "6", "--steps-per-epoch", "150",
             "--lr", "2e-4", "--warmup-steps", "50", "--val-cases", "1", "--val-targets", "t1c",
             "--max-minutes", budget["stage1"], "--seed", "0", "--threads", THREADS)
    mrisynth("train", "segmenter", "--data", str(data), "-o", str(run), "--config", "small",
             "--batch-size", "2", "--crop-size", "64", "--epochs", "4", "--steps-per-epoch", "60",
             "--max-minutes", budget["segmenter"], "--seed", "0", "--threads", THREADS)
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
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        for name in ["bundle.json", *manifest["files"].values()]:
            shutil.copy2(run / name, DEMO_DIR / name)
        shutil.copy2(run / "evaluation" / "evaluation.md", DEMO_DIR / "evaluation.md")
        print(f"installed into {DEMO_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
