#!/usr/bin/env bash
# How long does the paper's full reproduction take on this machine's GPU? (for a session lent a device)
#
# Runs `mrisynth reproduce` with the paper's networks and recipe (--config paper) on six full-size
# phantom cases with short budgets (20 stage-1 steps per model, a few Refiner steps), then scales the
# measured seconds per step to BraSyn's training set: 20 epochs of ~20,850 stage-1 steps (1251 cases x
# ~100 slices, all four targets per slice, batch 24) per stage-1 model and 100 epochs of 313 Refiner
# steps (batch 4). Writes everything under $OUT (or ./out-device) and prints the hours. About 5-8 min.
#
# Usage (device tool):  bash scripts/device_reproduce_estimate.sh   (scripts/device_session.sh runs it)
#   DEVICE=cpu STEPS=2 BATCH=2 bash scripts/device_reproduce_estimate.sh  (a dry run of the same steps without a
#   GPU; the paper's batch of 24 slices at 240 x 240 needs more than 24 GB on a CPU)
# The device machine has no package index: the project's dependencies that its image lacks travel with the
# call (scripts/device_session.sh --pack) and the project itself is put on PYTHONPATH, not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out-device}"
DEVICE="${DEVICE:-cuda}"
STEPS="${STEPS:-20}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import MRISynthesisLib.cli" || { echo "MRISynthesisLib does not import: carry its dependencies" >&2; exit 1; }
started=$(date +%s)
"$PYTHON" -m MRISynthesisLib.cli phantom -o "$OUT/phantoms" --cases 6 --seed 4200 >/dev/null
echo "6 full-size phantom cases in $(( $(date +%s) - started )) s"
# REPRODUCE_SECONDS caps the reproduction (the evaluations come last and are not needed for the hours); a run
# cut short still leaves each finished training's step times, which the estimate below reads.
timeout "${REPRODUCE_SECONDS:-0}" "$PYTHON" -m MRISynthesisLib.cli reproduce --data "$OUT/phantoms" -o "$OUT/reproduce" --device "$DEVICE" --config paper \
  --stage1-epochs 1 --steps-per-epoch "$STEPS" --segmenter-epochs 1 --stage2-epochs 1 --val-cases 1 \
  --evaluation-cases 1 ${BATCH:+--batch-size "$BATCH"} || echo "reproduce stopped early: estimating from what finished"
echo "reproduce in $(( $(date +%s) - started )) s"
# From the runs' own step records, so that the hours are there even without the evaluations.
"$PYTHON" - "$OUT/reproduce" <<'PY'
import sys
from pathlib import Path

from MRISynthesisLib.training.reproduction import full_recipe_estimate

BRASYN_STEPS = {"stage1": 20 * 20850, "stage2": 100 * 313}   # the paper's recipe on BraSyn's 1251 cases
total = 0.0
for name, entry in full_recipe_estimate(Path(sys.argv[1]), "paper").items():
    kind = name.split("/")[1]
    hours = entry["seconds_per_step"] * BRASYN_STEPS[kind] / 3600.0
    total += hours
    print(f"{name}: {entry['seconds_per_step']:.3f} s/step over {entry['measured_steps']} steps -> "
          f"{BRASYN_STEPS[kind]} steps on BraSyn: {hours:.1f} h")
print(f"all trainings of the reproduction (segmenter not included): {total:.1f} h on this device")
PY
