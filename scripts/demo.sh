#!/usr/bin/env bash
# The main job on embedded defaults (SQLite catalogue and job database in the user's data directory):
# the published GPT-2 small circuits, then discovery jobs on the shipped toy model, and what they share.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$("$repo/scripts/bootstrap.sh")
export HF_HUB_OFFLINE=1  # the toy model ships in the repo; nothing is fetched
exec "$venv/bin/circat" demo "$@"
