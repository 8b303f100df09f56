#!/usr/bin/env bash
# Quick start: set up .venv on first use, then run `dreamcord` (by default: start the bot).
#   ./run.sh                 start the bot (needs DISCORD_TOKEN in .env)
#   ./run.sh generate "a fox" --model tiny     any other dreamcord command
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/dreamcord ] || bash scripts/setup.sh
[ -f .env ] || { cp .env.example .env; echo "created .env from .env.example: put your DISCORD_TOKEN in it" >&2; }
exec .venv/bin/dreamcord "${@:-run}"
