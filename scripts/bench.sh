#!/usr/bin/env bash
# Benchmarks (figures, not timed tests): scripts/bench.sh catalogue [ARGS...]
set -euo pipefail
source "$(dirname "$0")/services.sh"
setup_env
which=${1:-catalogue}
shift || true
python "bench/$which.py" "$@"
