"""Lifecycle benchmark: copying, dumping and restoring a large catalogue, SQLite -> Neo4j and back (figures).

Run with scripts/bench.sh lifecycle [--circuits 10000] [--edges 2000]. Builds the catalogue bench's GPT-2-small
circuits (``--edges`` random scored edges each) in a SQLite file through the bulk path, then times, each on an
empty target: ``circat copy`` SQLite -> Neo4j and Neo4j -> SQLite (the copy, then its verification), ``circat
dump`` of each store and ``circat restore`` of the SQLite dump into Neo4j and of the Neo4j dump into SQLite.
Printed: records and edges per second, this process's peak resident memory above the step's start (sampled;
memory the allocator reuses is not counted again) and its largest resident set so far (both must stay flat as
the catalogue grows, since every path streams), and the archive's bytes per stored edge. Neo4j comes
from CIRCAT_NEO4J_URI (scripts/bench.sh starts one) and is wiped.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.catalogue import BULK, circuit, wipe_neo4j
from circat.service.lifecycle.archive import dump, restore
from circat.service.lifecycle.copy import copy_catalogue
from circat.service.lifecycle.records import ALL_PARTS, inventory
from circat.service.stores.neo4j import Neo4jStore
from circat.service.stores.sqlite import SqliteStore


def peak_rss(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """``fn()``'s result, its wall time and the peak resident memory above the start (sampled every 50 ms)."""
    proc, stop, peak = psutil.Process(), threading.Event(), [0]
    base = proc.memory_info().rss

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], proc.memory_info().rss - base)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
    return result, seconds, max(peak[0], proc.memory_info().rss - base)


def row(what: str, seconds: float, peak: int, circuits: int, edges: int, extra: str = "") -> None:
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{what:44} {seconds:9.1f} {circuits / seconds:11.1f} {edges / seconds:12,.0f} {peak / 2**20:9.0f} "
          f"{max_rss:9.0f}  {extra}", flush=True)


def build(path: Path, n: int, edges: int) -> SqliteStore:
    store = SqliteStore(f"sqlite:///{path}")
    rng = np.random.default_rng(0)
    for i in range(0, n, BULK):
        store.write_many([circuit(rng, edges, j) for j in range(i, min(n, i + BULK))])
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--circuits", type=int, default=10_000)
    ap.add_argument("--edges", type=int, default=2000)
    args = ap.parse_args()
    uri = os.environ["CIRCAT_NEO4J_URI"]
    total_edges = args.circuits * args.edges
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, t, _ = peak_rss(lambda: build(root / "source.db", args.circuits, args.edges))
        print(f"source: {args.circuits:,} GPT-2-small circuits x {args.edges:,} edges ({total_edges:,} edges) in "
              f"SQLite, built in {t:.0f} s")
        print(f"{'step':44} {'seconds':>9} {'circuits/s':>11} {'edges/s':>12} {'+peak MB':>9} {'max RSS':>9}")
        source = SqliteStore(f"sqlite:///{root / 'source.db'}")
        wipe_neo4j(uri)
        neo = Neo4jStore(uri)
        _, t, peak = peak_rss(lambda: copy_catalogue(source, neo, ALL_PARTS, verify=False))
        row("copy SQLite -> Neo4j", t, peak, args.circuits, total_edges)
        same, t, peak = peak_rss(lambda: {m: i.view() for m, i in inventory(source).items()}
                                 == {m: i.view() for m, i in inventory(neo).items()})
        row("  its verification (both sides read back)", t, peak, args.circuits, total_edges, f"same: {same}")
        laptop = SqliteStore(f"sqlite:///{root / 'laptop.db'}")
        _, t, peak = peak_rss(lambda: copy_catalogue(neo, laptop, ALL_PARTS, verify=False))
        row("copy Neo4j -> SQLite", t, peak, args.circuits, total_edges)
        for name, store in (("SQLite", source), ("Neo4j", neo)):
            archive = root / f"{name}.zip"
            _, t, peak = peak_rss(lambda s=store, a=archive: dump(s, a))
            size = archive.stat().st_size
            row(f"dump {name}", t, peak, args.circuits, total_edges,
                f"{size / 2**20:.0f} MB, {size / total_edges:.2f} bytes per stored edge")
        wipe_neo4j(uri)
        neo = Neo4jStore(uri)
        _, t, peak = peak_rss(lambda: restore(root / "SQLite.zip", neo))
        row("restore the SQLite dump into Neo4j", t, peak, args.circuits, total_edges)
        back = SqliteStore(f"sqlite:///{root / 'back.db'}")
        _, t, peak = peak_rss(lambda: restore(root / "Neo4j.zip", back))
        row("restore the Neo4j dump into SQLite", t, peak, args.circuits, total_edges)
        print(f"round trip identical: {inventory(back).keys() == inventory(source).keys()} "
              f"(checksums: {[i.checksum[:12] for i in inventory(back).values()]} vs "
              f"{[i.checksum[:12] for i in inventory(source).values()]})")


if __name__ == "__main__":
    main()
