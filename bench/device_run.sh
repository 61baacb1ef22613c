#!/usr/bin/env bash
# One accelerator session: golden parity in fp32, then the step-time table (bf16, tf32, fp32) and the
# accuracy of bf16 and tf32 against fp32.
# Usage: bash bench/device_run.sh GOLDEN_DIR OUT_DIR
set -u
golden=${1:-../shared/golden}
out=${2:-bench/results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
python3 bench/parity_on_device.py --golden="$golden" > "$out/parity.json" 2> "$out/parity.err"
cat "$out/parity.json"
python3 bench/step.py --preset=gpu --lpips=auto --check_bf16 --check_resolution=256 --check_steps=100 \
  --out="$out/step.json" 2> "$out/step.err" | tee "$out/step.md"
tail -3 "$out/step.err"
