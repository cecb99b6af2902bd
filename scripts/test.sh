#!/usr/bin/env bash
# The test command: environment, a real Neo4j on loopback (unless CIRCAT_NEO4J_URI is given or
# CIRCAT_SKIP_NEO4J=1), ruff, then pytest. Servers it starts are stopped by pid on exit.
set -euo pipefail
source "$(dirname "$0")/services.sh"
setup_env
ruff check .
python -m pytest "$@"
