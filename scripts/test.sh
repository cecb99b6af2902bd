#!/usr/bin/env bash
# The test command: environment, a real Neo4j on loopback (unless CIRCAT_NEO4J_URI is given or
# CIRCAT_SKIP_NEO4J=1), ruff, then pytest. Servers it starts are stopped by pid on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv=$(scripts/bootstrap.sh dev)
export PATH="$venv/bin:$PATH"
run=$(mktemp -d "${TMPDIR:-/tmp}/circat-test.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT
free_port() { python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if [ -z "${CIRCAT_NEO4J_URI:-}" ] && [ "${CIRCAT_SKIP_NEO4J:-0}" != 1 ]; then
  port=$(free_port)
  pids+=("$(scripts/neo4j-launcher.sh "$run/neo4j" "$port" "$run/neo4j.log")")
  export CIRCAT_NEO4J_URI="bolt://127.0.0.1:$port"
  echo "neo4j: started on $CIRCAT_NEO4J_URI (pid ${pids[0]})"
fi

ruff check .
python -m pytest "$@"
