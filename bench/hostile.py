"""Hostile clients against a live server (figures, not timed tests): one huge unauthenticated body, many heavy reports.

1. **Unauthenticated body**: ``--body-mb`` MB of tiny objects (``[{},{},...]``) sent without a key to
   ``POST /circuits`` on a server with ``CIRCAT_API_KEY`` set. Prints the answer's status and time, the slowest
   ``GET /health`` seen meanwhile (polled every 0.1 s by another client) and the server's peak memory growth.
2. **Concurrent heavy reports**: ``--reports`` clients at once ask ``GET /report`` for 10 GPT-2-small circuits of
   32,491 scored edges with ``--top-edges``. Prints the statuses with their slowest answer, how long the server
   kept computing (CPU) after the last answer, and the time of one fresh report then.

Run with scripts/bench.sh hostile [--stores sqlite,neo4j] [--body-mb 255] [--reports 12] [--top-edges 5000];
``PYTHONPATH=OTHER_CHECKOUT`` serves another checkout's code (the figures before a change).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from bench.catalogue import circuit, wipe_neo4j
from bench.fuzz import peak_mb
from circat.service.catalogue import Catalogue
from circat.service.graph import graph_for
from circat.service.stores import open_store
from tests.helpers import GPT2
from tests.live_server import busy_after, live_server, poll_health, send_body

KEY = "hostile-bench-key"


def unauthenticated_body(url: str, log: Path, mb: int) -> None:
    body = b"[" + b"{}," * (mb * 1_000_000 // 3 - 1) + b"{}]"
    with live_server(url, log, CIRCAT_API_KEY=KEY) as server:
        idle = server.rss_mb()
        stop, worst = threading.Event(), [0.0]
        poller = threading.Thread(target=poll_health, args=(server, stop, worst))
        poller.start()
        status, took = send_body(server, "/circuits", body)
        time.sleep(2)  # the server's memory after the body was dealt with
        stop.set()
        poller.join()
        peak = peak_mb(server)
    print(f"  unauthenticated {len(body) / 1e6:.0f} MB body: '{status}' after {took:.2f} s; "
          f"slowest /health meanwhile {worst[0]:.2f} s; server memory {idle:.0f} MB idle, peak +{peak - idle:.0f} MB")


def heavy_reports(url: str, log: Path, clients: int, top_edges: int) -> None:
    rng = np.random.default_rng(0)
    n_edges = graph_for(GPT2).n_edges
    with open_store(url) as store:
        ids = Catalogue(store).add_many([circuit(rng, n_edges, i) for i in range(10)])
    query = [("ids", i) for i in ids] + [("top_edges", str(top_edges))]
    with live_server(url, log) as server:
        results: list[tuple[int, float]] = []

        def ask() -> None:
            t = time.perf_counter()
            try:
                status = httpx.get(f"{server.url}/report", params=query, timeout=300).status_code
            except httpx.HTTPError:
                status = 0
            results.append((status, time.perf_counter() - t))

        threads = [threading.Thread(target=ask) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        busy = busy_after(server.pid)
        t = time.perf_counter()
        fresh = httpx.get(f"{server.url}/report", params=query, timeout=300).status_code
        fresh_s = time.perf_counter() - t
    slowest = {s: max(took for st, took in results if st == s) for s in {s for s, _ in results}}
    counts = sorted(Counter(s for s, _ in results).items())
    shown = ", ".join(f"{n} x {s} (slowest {slowest[s]:.1f} s)" for s, n in counts)
    print(f"  {clients} concurrent reports of 10 x {n_edges:,}-edge circuits, top_edges={top_edges}: {shown}; "
          f"server busy {busy:.1f} s after the last answer; a fresh report then: {fresh} in {fresh_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", default="sqlite,neo4j")
    parser.add_argument("--body-mb", type=int, default=255)
    parser.add_argument("--reports", type=int, default=12)
    parser.add_argument("--top-edges", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for store in args.stores.split(","):
            print(f"{store}:")
            for part in ("body", "reports"):
                url = f"sqlite:///{Path(tmp) / f'{part}.db'}" if store == "sqlite" else os.environ["CIRCAT_NEO4J_URI"]
                if store == "neo4j":
                    wipe_neo4j(url)
                log = Path(tmp) / f"serve-{store}-{part}.log"
                if part == "body":
                    unauthenticated_body(url, log, args.body_mb)
                else:
                    heavy_reports(url, log, args.reports, args.top_edges)


if __name__ == "__main__":
    main()
