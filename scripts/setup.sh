#!/usr/bin/env bash
# Create or update .venv with Dreamcord and what it needs. `scripts/setup.sh dev` adds the test tools.
# Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Pinned first: an unpinned torch resolves to the newest build, several GB of CUDA libraries.
python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
if [ "$extras" = dev ]; then
  python -m pip install -q -e ".[dev]"
  # The A1111 parity tests' reference; only k_diffusion.sampling/external are used, whose other
  # needs (torchsde, scipy, torchdiffeq) the dev extra has.
  python -m pip install -q --no-deps k-diffusion==0.1.1.post1
else
  python -m pip install -q -e .
fi
