# Sourced by scripts/test.sh and scripts/bench.sh: the environment and the servers they start.
# Servers are started on 127.0.0.1 and stopped by pid when the calling script exits.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/circat-run.XXXXXX")
started_pids=()

stop_services() {
  local p i
  for p in "${started_pids[@]}"; do
    kill "$p" 2>/dev/null || continue
    for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$run_dir"
}
trap stop_services EXIT
trap 'exit 143' TERM  # so a stopped run still stops its servers (through the EXIT trap)
trap 'exit 130' INT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Start Neo4j unless CIRCAT_NEO4J_URI names one or CIRCAT_SKIP_NEO4J=1; exports CIRCAT_NEO4J_URI
# (and, for the benchmarks' footprint figures, its pid and data directory).
ensure_neo4j() {
  if [ -n "${CIRCAT_NEO4J_URI:-}" ] || [ "${CIRCAT_SKIP_NEO4J:-0}" = 1 ]; then return 0; fi
  local port pid
  port=$(free_port)
  pid=$("$repo/scripts/neo4j-launcher.sh" "$run_dir/neo4j" "$port" "$run_dir/neo4j.log")
  started_pids+=("$pid")
  export CIRCAT_NEO4J_URI="bolt://127.0.0.1:$port" CIRCAT_NEO4J_PID=$pid CIRCAT_NEO4J_DATA="$run_dir/neo4j"
  echo "neo4j: started on $CIRCAT_NEO4J_URI (pid $pid)"
}

# Install Debian packages that provide COMMAND when it is missing (root only): ensure_pkg COMMAND PACKAGE...
ensure_pkg() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/"$cmd" >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || { echo "$cmd is missing: apt-get install $*" >&2; return 1; }
  echo "installing $* (Debian packages)" >&2
  apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
}

# A throwaway PostgreSQL cluster on 127.0.0.1 unless CIRCAT_TEST_POSTGRES_URL names one; exports it.
ensure_postgres() {
  if [ -n "${CIRCAT_TEST_POSTGRES_URL:-}" ] || [ "${CIRCAT_SKIP_POSTGRES:-0}" = 1 ]; then return 0; fi
  ensure_pkg initdb postgresql
  local bin port dir pid as=()
  bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
  port=$(free_port)
  dir="$run_dir/postgres"
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir"; chmod 755 "$run_dir"; as=(runuser -u postgres --); fi
  "${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U circat >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  "${as[@]}" "$bin/postgres" -D "$dir/data" -h 127.0.0.1 -p "$port" -k "$dir" -c fsync=off >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    "$bin/pg_isready" -h 127.0.0.1 -p "$port" -q && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/log" >&2; return 1; }
    sleep 0.2
  done
  pid=$(head -1 "$dir/data/postmaster.pid")  # the server itself, not the runuser wrapper
  started_pids+=("$pid")
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U circat jobs
  export CIRCAT_TEST_POSTGRES_URL="postgresql+psycopg://circat@127.0.0.1:$port/jobs"
  echo "postgres: started on 127.0.0.1:$port (pid $pid)"
}

# The project environment on PATH and Neo4j up: what the test and bench commands need.
setup_env() {
  cd "$repo"
  local venv
  venv=$(scripts/bootstrap.sh)
  export PATH="$venv/bin:$PATH"
  ensure_neo4j
  ensure_postgres
  ensure_pkg redis-server redis-server  # the queue tests start their own redis-server instances
  ensure_pkg chromium chromium          # the report tests render pages in headless Chromium
}
