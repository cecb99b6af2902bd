"""A long API fuzz campaign: schemathesis with every check against a live server, per store and key setting
(no key, the API key, a read key alone). Prints requests (from the server's access log), 5xx answers, check
failures, idle and peak server memory.

Run with scripts/bench.sh fuzz [--examples 150] [--stores sqlite,neo4j] (the script starts Neo4j).
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.conftest import wipe_neo4j
from tests.fuzzing import config, fuzz, seed
from tests.live_server import LiveServer, live_server


def peak_mb(server: LiveServer) -> float:
    """The server's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


KEYS = {"none": None, "API key": "CIRCAT_API_KEY", "read key": "CIRCAT_READ_KEY"}
KEY = "campaign-key"


def campaign(store: str, setting: str, examples: int, work: Path) -> list[str]:
    """One fuzz run; the row of figures it prints."""
    var, tag = KEYS[setting], setting.replace(" ", "-")
    url = f"sqlite:///{work / f'{store}-{tag}.db'}" if store == "sqlite" else os.environ["CIRCAT_NEO4J_URI"]
    if store == "neo4j":
        wipe_neo4j(url)
    cfg = work / "schemathesis.toml"
    cfg.write_text(config(seed(url), KEY if var else None))
    log = work / f"serve-{store}-{tag}.log"
    env = {"CIRCAT_DATABASE_URL": f"sqlite:///{work / f'jobs-{store}-{tag}.db'}"} | ({var: KEY} if var else {})
    with live_server(url, log, **env) as server:
        idle = server.rss_mb()
        t = time.perf_counter()
        run = fuzz(server.url, cfg, examples, seed_value=7)
        seconds = time.perf_counter() - t
        peak, health = peak_mb(server), server.health_seconds()
    statuses = re.findall(r'HTTP/1\.1" (\d{3})', log.read_text())
    server_errors = sum(s.startswith("5") for s in statuses)
    return [store, setting, str(run.generated), str(len(statuses)), str(server_errors),
            str(run.failures), f"{idle:.0f}", f"{peak:.0f}", f"{peak - idle:.0f}", f"{health * 1000:.0f}",
            f"{seconds:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=150, help="max examples per operation and phase")
    parser.add_argument("--stores", default="sqlite,neo4j")
    args = parser.parse_args()
    table = Table("store", "key", "test cases", "requests", "5xx", "check failures", "idle MB", "peak MB",
                  "growth MB", "/health ms", "seconds", title="API fuzz campaign (schemathesis --checks all)")
    with tempfile.TemporaryDirectory() as tmp:
        for store in args.stores.split(","):
            for setting in KEYS:
                row = campaign(store, setting, args.examples, Path(tmp))
                print(" | ".join(row), flush=True)  # each row as it finishes, then the table
                table.add_row(*row)
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
