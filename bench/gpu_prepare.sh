#!/usr/bin/env bash
# Prepares the one-command GPU run (docs/benchmarks.md): the shared preparation (wheels in .whl/,
# check.sh and ref_diffusers.py in .gpu/, both ignored by .gitignore), the tomesd wheel fast mode
# needs, and a line in .gpu/check.sh that runs bench/gpu_checks.sh inside its logged block.
# Then, on the GPU host: bash .gpu/check.sh (carry .whl and .gpu).
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
shared=$(cd ../shared/gpu && pwd)
if [ -d .git ]; then
  bash "$shared/prepare.sh"
else
  # A git worktree: its .git is a file, where prepare.sh cannot append its excludes (and the
  # common exclude file belongs to the main checkout); .gitignore ignores both folders anyway.
  tmp=$(mktemp -d)
  cp "$shared/check.sh" "$shared/ref_diffusers.py" "$tmp/"
  sed "s#\.git/info/exclude#$tmp/exclude#g" "$shared/prepare.sh" > "$tmp/prepare.sh"
  bash "$tmp/prepare.sh"
  rm -rf "$tmp"
fi
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl tomesd==0.1.3 2>&1 \
  | grep -v '^WARNING' || true
grep -q 'bench/gpu_checks.sh' .gpu/check.sh \
  || sed -i 's/^} 2>&1 | tee "\$log"$/  bash bench\/gpu_checks.sh\n&/' .gpu/check.sh
grep -q 'bench/gpu_checks.sh' .gpu/check.sh || { echo "could not hook gpu_checks.sh"; exit 1; }
echo "ready: bash .gpu/check.sh on the GPU host, carrying .whl and .gpu"
