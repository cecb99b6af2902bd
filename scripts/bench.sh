#!/usr/bin/env bash
# Benchmarks (figures, not timed tests): scripts/bench.sh catalogue [ARGS...]
set -euo pipefail
source "$(dirname "$0")/services.sh"
[ "${1:-}" = engine ] && export CIRCAT_SKIP_NEO4J=1
setup_env
which=${1:-catalogue}
shift || true
python -m "bench.$which" "$@"
