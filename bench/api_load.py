"""The API under load: concurrent clients mixing reads and imports against a multi-process server.

Run with scripts/bench.sh api_load [--stores sqlite,neo4j] [--clients 16] [--seconds 60] [--workers 2]
[--seed 200]. For each store it starts ``circat serve --workers N`` on loopback, stopped by its pid
(Neo4j from CIRCAT_NEO4J_URI, wiped first; SQLite in a temporary file), stores ``--seed`` GPT-2-small circuits
of 2,000 edges through ``POST /circuits:batch``, then runs ``--clients`` threads for ``--seconds``,
each picking per request: list a filtered page (30 %), get a circuit (25 %), pairwise overlap (25 %),
5-way consensus (10 %) or import a new circuit (10 %). Prints requests per second, p50/p95/p99
latency overall and per kind, and every non-2xx status (the target: zero 5xx). The clients share
the machine with the server, so the figures are a floor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.catalogue import circuit, wipe_neo4j
from circat.service.documents import document_from_circuit
from tests.live_server import live_server

MIX = {"list": 0.30, "get": 0.25, "overlap": 0.25, "consensus": 0.10, "import": 0.10}


@dataclass
class Tally:
    """Latencies (ms) and statuses per request kind, shared by the client threads."""

    latency: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, status: int, ms: float) -> None:
        with self.lock:
            self.latency.setdefault(kind, []).append(ms)
            self.statuses[kind, status] += 1


def documents(n: int, seed: int) -> list[dict]:
    """``n`` GPT-2-small circuit documents of 2,000 random scored edges, as request bodies."""
    rng = np.random.default_rng(seed)
    return [document_from_circuit(circuit(rng, 2000, seed * 1_000_000 + i)).model_dump(
        mode="json", exclude_none=True, exclude={"id"}) for i in range(n)]


def seed_catalogue(base: str, n: int) -> list[str]:
    """Store ``n`` circuits through the batch endpoint, 50 per request; their ids."""
    ids: list[str] = []
    with httpx.Client(base_url=base, timeout=300) as client:
        for start in range(0, n, 50):
            r = client.post("/circuits:batch", json={"circuits": documents(min(50, n - start), start + 1)})
            r.raise_for_status()
            ids += [x["id"] for x in r.json()["results"]]
    return ids


def client_loop(base: str, ids: list[str], imports: list[dict], deadline: float, seed: int, tally: Tally) -> None:
    """One client: requests of kinds drawn from ``MIX`` until ``deadline``."""
    rng = np.random.default_rng(seed)
    kinds, weights = list(MIX), list(MIX.values())
    with httpx.Client(base_url=base, timeout=120) as client:
        while time.monotonic() < deadline:
            kind = kinds[rng.choice(len(kinds), p=weights)]
            if kind == "import" and not imports:
                kind = "get"
            pick = [str(x) for x in rng.choice(ids, 5, replace=False)]
            t = time.perf_counter()
            if kind == "list":
                r = client.get("/circuits", params={"model": "gpt2", "task": f"task{rng.integers(7)}",
                                                    "min_faithfulness": 0.5, "limit": 50})
            elif kind == "get":
                r = client.get(f"/circuits/{pick[0]}")
            elif kind == "overlap":
                r = client.get("/overlap", params={"a": pick[0], "b": pick[1]})
            elif kind == "consensus":
                r = client.get("/consensus", params={"ids": pick, "min_support": 3})
            else:
                r = client.post("/circuits", json=imports.pop())
            tally.add(kind, r.status_code, 1000 * (time.perf_counter() - t))


def load(base: str, ids: list[str], clients: int, seconds: float) -> tuple[Tally, float]:
    """Run the clients for ``seconds``; the tally and the wall time."""
    tally = Tally()
    pools = [documents(int(seconds // 2), 10_000 + c) for c in range(clients)]  # imports are about 10 %
    deadline = time.monotonic() + seconds
    t = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(base, ids, pools[c], deadline, c, tally))
               for c in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return tally, time.perf_counter() - t


def report(name: str, tally: Tally, wall: float, workers: int, clients: int) -> None:
    every = [ms for v in tally.latency.values() for ms in v]
    p50, p95, p99 = np.percentile(every, [50, 95, 99])
    errors = {f"{k} {s}": n for (k, s), n in sorted(tally.statuses.items()) if s >= 300}
    fives = sum(n for (_, s), n in tally.statuses.items() if s >= 500)
    print(f"[{name}] {clients} clients, {workers} API processes, {wall:.0f} s: {len(every):,} requests = "
          f"{len(every) / wall:.1f} req/s; p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms; 5xx: {fives}; "
          f"non-2xx: {errors or 'none'}")
    for kind, v in sorted(tally.latency.items()):
        q50, q95, q99 = np.percentile(v, [50, 95, 99])
        print(f"[{name}]   {kind:9s} {len(v):6,} requests, median {statistics.median(v):.0f} ms, "
              f"p50/p95/p99 {q50:.0f}/{q95:.0f}/{q99:.0f} ms")


def run_store(name: str, url: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as d, live_server(url, Path(d) / "server.log", workers=args.workers,
                                                         CIRCAT_DATABASE_URL=f"sqlite:///{d}/jobs.db") as server:
        t = time.perf_counter()
        ids = seed_catalogue(server.url, args.seed)
        print(f"[{name}] seeded {len(ids)} circuits through POST /circuits:batch in {time.perf_counter() - t:.1f} s")
        tally, wall = load(server.url, ids, args.clients, args.seconds)
        report(name, tally, wall, args.workers, args.clients)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stores", default="sqlite,neo4j")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--workers", type=int, default=2, help="API processes (uvicorn workers)")
    ap.add_argument("--seed", type=int, default=200, help="circuits stored before the load starts")
    args = ap.parse_args()
    for name in filter(None, args.stores.split(",")):
        if name == "sqlite":
            with tempfile.TemporaryDirectory() as d:
                run_store(name, f"sqlite:///{d}/load.db", args)
        elif name == "neo4j":
            uri = os.environ["CIRCAT_NEO4J_URI"]
            wipe_neo4j(uri)
            run_store(name, uri, args)
        else:
            raise SystemExit(f"unknown store {name!r}")


if __name__ == "__main__":
    main()
