#!/usr/bin/env bash
# Benchmarks (figures, not timed tests): scripts/bench.sh catalogue [ARGS...]
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$repo"
venv=$(scripts/bootstrap.sh dev)
export PATH="$venv/bin:$PATH"
ensure_neo4j
which=${1:-catalogue}
shift || true
python "bench/$which.py" "$@"
