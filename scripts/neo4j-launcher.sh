#!/usr/bin/env bash
# Start Neo4j Community 5.26 (embedded engine + Bolt, from Maven Central) on 127.0.0.1.
# Usage: scripts/neo4j-launcher.sh DATA_DIR PORT LOGFILE  -> prints the server's pid once Bolt is ready.
# CIRCAT_NEO4J_JAVA_OPTS replaces the JVM options (default -Xmx3g: a transaction of an 80k-edge circuit needs ~1 GB).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
data=$1 port=$2 log=$3
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  echo "Neo4j for the tests needs Java 17+ and Maven (Debian: apt-get install openjdk-17-jre-headless maven)," >&2
  echo "or a running Neo4j 5 given as CIRCAT_NEO4J_URI=bolt://HOST:PORT, or CIRCAT_SKIP_NEO4J=1 to skip its suite." >&2
  exit 1
fi
jv=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/ *java.specification.version = //p')
[ "${jv%%.*}" -ge 17 ] || { echo "Neo4j 5.26 needs Java 17 or later; found $jv" >&2; exit 1; }
launcher="$repo/tests/neo4j_server"
stamp="$launcher/target/.built"
if [ ! -f "$stamp" ] || [ "$launcher/pom.xml" -nt "$stamp" ] \
   || [ "$launcher/src/main/java/circat/Neo4jLauncher.java" -nt "$stamp" ]; then
  echo "neo4j: building the launcher (first run downloads Neo4j from Maven Central)" >&2
  mvn -q -B -f "$launcher/pom.xml" dependency:build-classpath -Dmdep.outputFile=target/classpath.txt compile >&2
  touch "$stamp"
fi
java ${CIRCAT_NEO4J_JAVA_OPTS:--Xmx3g -XX:+UseSerialGC} -cp "$launcher/target/classes:$(cat "$launcher/target/classpath.txt")" \
  circat.Neo4jLauncher "$data" "$port" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 180); do
  if grep -qs '^READY' "$log"; then echo "$pid"; exit 0; fi
  kill -0 "$pid" 2>/dev/null || { echo "neo4j exited during start:" >&2; tail -30 "$log" >&2; exit 1; }
  sleep 0.5
done
echo "neo4j did not become ready in 90 s:" >&2; tail -30 "$log" >&2; kill "$pid"; exit 1
