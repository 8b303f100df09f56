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
else
  python -m pip install -q -e .
fi
