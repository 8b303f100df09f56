#!/usr/bin/env bash
# Issue 23's GPU checks (docs/benchmarks.md). bench/gpu_prepare.sh hooks this into .gpu/check.sh,
# which runs it after its own checks (versions, the CLI, plain diffusers, the eager benchmark), in
# the same run so the ratios are fair. About 3 minutes on an H100-class card: the compiled
# benchmark (two UNet graphs to compile: 1 and 16 images) and the memory calibration check
# (predicted vs measured peaks at batch 8 and 16). Prints one JSON line each. Run alone too:
# `bash bench/gpu_checks.sh` installs the wheels itself when check.sh has not.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ -z "${PYTHONPATH:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
echo "== 4. the project's benchmark, compiled (torch.compile per batch bucket)"
timeout 240 python3 -m bench throughput --model sd15-random --size 512x512 --steps 25 \
  --max-batch 16 --jobs 16 --compile --json
echo "== 5. memory calibration: fitted on batch 1 and 2, checked at 8 and 16 (within 15%?)"
timeout 90 python3 -m bench calibrate --model sd15-random --json
