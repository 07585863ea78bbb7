#!/usr/bin/env bash
# How long does the paper's full reproduction take on this machine's GPU? (for a session lent a device)
#
# Runs `mrisynth reproduce` with the paper's networks and recipe (--config paper) on six full-size
# phantom cases with short budgets (20 stage-1 steps per model, a few Refiner steps), then scales the
# measured seconds per step to BraSyn's training set: 20 epochs of ~20,850 stage-1 steps (1251 cases x
# ~100 slices, all four targets per slice, batch 24) per stage-1 model and 100 epochs of 313 Refiner
# steps (batch 4). Writes everything under $OUT (or ./out-device) and prints the hours. About 5-8 min.
#
# Usage (device tool):  bash scripts/device_reproduce_estimate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out-device}"
python -m pip install --quiet -e . >/dev/null 2>&1 || true
python -m MRISynthesisLib.cli phantom -o "$OUT/phantoms" --cases 6 --seed 4200 >/dev/null
python -m MRISynthesisLib.cli reproduce --data "$OUT/phantoms" -o "$OUT/reproduce" --device cuda --config paper \
  --stage1-epochs 1 --steps-per-epoch 20 --segmenter-epochs 1 --stage2-epochs 1 --val-cases 1 \
  --evaluation-cases 1
python - "$OUT/reproduce/reproduction.json" <<'EOF'
import json, sys
record = json.load(open(sys.argv[1]))
BRASYN_STEPS = {"stage1": 20 * 20850, "stage2": 100 * 313}   # the paper's recipe on BraSyn's 1251 cases
total = 0.0
for name, entry in record["full_recipe_estimate"].items():
    kind = name.split("/")[1]
    hours = entry["seconds_per_step"] * BRASYN_STEPS[kind] / 3600.0
    total += hours
    print(f"{name}: {entry['seconds_per_step']:.3f} s/step -> {BRASYN_STEPS[kind]} steps on BraSyn: {hours:.1f} h")
print(f"all trainings of the reproduction (segmenter not included): {total:.1f} h on this device")
EOF
