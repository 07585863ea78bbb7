#!/usr/bin/env bash
# The GPU checks a session that is lent a device machine runs, in one call of at most 9 minutes.
#
# 1. `scripts/device_reproduce_estimate.sh`: seconds per step of the paper's trainings on the GPU and the
#    hours that makes on BraSyn's 1251 cases (README "Reproducing the paper", #17);
# 2. `benchmarks/run.py --device cuda --configs paper --full`: the paper configuration's inference on one
#    full-size case, every task measured (no extrapolation), with peak GPU memory.
#
# The device machine has PyTorch but no package index, and the project's other dependencies (SimpleITK,
# MONAI, nibabel, nilearn, pydicom) as plain wheels are larger than what a call may carry next to the
# repository (64 MiB), so they travel unpacked and xz-compressed (about 40 MB) in an ignored folder:
#
#   here, once:        bash scripts/device_session.sh --pack          (writes .device-site/site.tar.xz)
#   device tool:       run(command="bash scripts/device_session.sh", carry=[".device-site"], timeout_s=580)
#
# What comes back under $OUT: the logs (estimate.log ends with the hours), benchmark.txt and benchmark.json.
# First run (2026-11-30, H200): the trainings took 4.5 min, the evaluations were cut at 400 s; the
# benchmark 2.2 min. README "Reproducing the paper" and benchmarks/README.md hold the numbers.
set -uo pipefail
cd "$(dirname "$0")/.."
SITE_DIR=.device-site
PACKAGES="SimpleITK monai nibabel nilearn pydicom"

if [ "${1:-}" = "--pack" ]; then
  set -e
  grep -qx "/$SITE_DIR/" .git/info/exclude 2>/dev/null || echo "/$SITE_DIR/" >> .git/info/exclude
  work=$(mktemp -d)
  # The device's Python is 3.12 on x86-64 (.library/device/KINDS.md); the rest of what these need is there.
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$work/wheels" $PACKAGES
  mkdir -p "$work/site" "$SITE_DIR"
  for wheel in "$work"/wheels/*.whl; do python3 -m zipfile -e "$wheel" "$work/site"; done
  find "$work/site" -type d -name tests -prune -exec rm -rf {} +
  tar -C "$work/site" -cf - . | xz -9 -T0 > "$SITE_DIR/site.tar.xz"
  rm -rf "$work"
  ls -l "$SITE_DIR/site.tar.xz"
  exit 0
fi

OUT="${OUT:-out-device}"
mkdir -p "$OUT"
started=$(date +%s)
left() { echo $(( ${1} - ($(date +%s) - started) )); }
if [ -f "$SITE_DIR/site.tar.xz" ]; then
  python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall('/tmp/site')" "$SITE_DIR/site.tar.xz" || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch, SimpleITK, monai; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  | tee -a "$OUT/gpu.txt"

# The estimate first (it decides #17); the benchmark gets what is left of 9 minutes.
OUT=/tmp/work REPRODUCE_SECONDS="$(left 330)" timeout "$(left 400)" bash scripts/device_reproduce_estimate.sh > "$OUT/estimate.log" 2>&1
echo "estimate: exit $? after $(( $(date +%s) - started )) s" | tee -a "$OUT/estimate.log"
timeout "$(left 540)" python3 benchmarks/run.py --output-dir /tmp/bench --device cuda --configs paper --full \
  --repeat 1 > "$OUT/benchmark.log" 2>&1
echo "benchmark: exit $? after $(( $(date +%s) - started )) s" | tee -a "$OUT/benchmark.log"
cp /tmp/bench/benchmark.txt /tmp/bench/benchmark.json "$OUT/" 2>/dev/null
exit 0
