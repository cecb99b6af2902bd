#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the project into it.
# The environment lives outside the clone, keyed by the dependency pins, so a fresh clone
# reuses it: ${CIRCAT_VENV_ROOT:-~/.cache/circat}/venv-<hash>. Prints the venv path last.
# Usage: scripts/bootstrap.sh [EXTRAS]   (default extras: dev,worker)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
extras=${1:-dev,worker}
python=${CIRCAT_PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'

# The key: what decides the installed packages (declared dependencies, pins, extras, Python), not the
# rest of pyproject.toml (tool settings), so editing those reuses the environment.
deps=$("$python" -c 'import json, sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(json.dumps([p["dependencies"], p.get("optional-dependencies"), p.get("requires-python")], sort_keys=True))' \
  "$repo/pyproject.toml")
key=$( { echo "$deps"; cat "$repo/constraints.txt"; echo "$extras"; "$python" -VV; } | sha256sum | cut -c1-16)
root=${CIRCAT_VENV_ROOT:-$HOME/.cache/circat}
venv="$root/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "bootstrap: creating $venv (extras: $extras)" >&2
  rm -rf "$venv"
  mkdir -p "$root"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -c "$repo/constraints.txt" -e "$repo[$extras]" >&2
  touch "$venv/.complete"
fi
# Point the (shared) environment at this clone; dependencies are already there.
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$repo" >&2 2>/dev/null \
  || "$venv/bin/python" -m pip install -q --no-deps -e "$repo" >&2
echo "$venv"
