"""Catalogue benchmark: ingest and overlap-query speed on each store, and report rendering (prints figures).

Run with scripts/bench.sh catalogue [--stores sqlite,neo4j] [--circuits 1000] [--edges 2000].
Neo4j comes from CIRCAT_NEO4J_URI (scripts/bench.sh starts one). The Neo4j database is wiped.
The report figure: the HTML report of 10 GPT-2-small circuits holding all 32,491 edges, scored
(``--stores ''`` measures only that).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
from neo4j import GraphDatabase
from rich.progress import track

from service.catalogue import Catalogue
from service.circuit import Circuit, Provenance
from service.graph import graph_for
from service.report.page import report_html
from service.stores import CircuitStore
from service.stores.neo4j import Neo4jStore
from service.stores.sqlite import SqliteStore
from service.types import ModelShape

GPT2 = ModelShape(12, 12, False, 768)


def circuit(rng: np.random.Generator, n_edges: int, i: int) -> Circuit:
    """A GPT-2-small edge circuit with ``n_edges`` random scored edges."""
    g = graph_for(GPT2)
    mask = np.zeros(g.n_edges, dtype=bool)
    mask[rng.choice(g.n_edges, size=n_edges, replace=False)] = True
    scores = np.where(mask, rng.normal(size=g.n_edges), np.nan)
    return Circuit(
        provenance=Provenance(model="gpt2", task=f"task{i % 7}", method="bench", params={"i": i}),
        shape=GPT2, node_mask=g.endpoint_mask(mask), node_scores=np.full(g.n_nodes, np.nan),
        edge_mask=mask, edge_scores=scores,
    )


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def bench(name: str, store: CircuitStore, n_circuits: int, n_edges: int) -> None:
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    store.put(circuit(rng, 1, -2))
    print(f"[{name}] first circuit of a new model (registers its graph): {time.perf_counter() - t:.2f} s")
    full = circuit(rng, graph_for(GPT2).n_edges, -1)
    t = time.perf_counter()
    store.put(full)
    one = time.perf_counter() - t
    print(f"[{name}] ingest one GPT-2-small circuit, {full.n_edges} scored edges: {one:.2f} s "
          f"= {full.n_edges / one:,.0f} edges/s")
    batch = [circuit(rng, n_edges, i) for i in range(n_circuits)]
    t = time.perf_counter()
    ids = [store.put(c) for c in track(batch, description=f"[{name}] ingest", transient=True)]
    many = time.perf_counter() - t
    total = sum(c.n_edges for c in batch)
    print(f"[{name}] ingest {n_circuits} circuits of {n_edges} edges: {many:.1f} s "
          f"= {total / many:,.0f} edges/s, {n_circuits / many:.1f} circuits/s")
    cat = Catalogue(store)
    pick = np.random.default_rng(1)
    pair = median_ms(lambda: cat.overlap(*pick.choice(ids, 2, replace=False)), 50)
    ten = median_ms(lambda: cat.consensus(list(pick.choice(ids, 10, replace=False)), 5), 20)
    grid = median_ms(lambda: cat.matrix(list(pick.choice(ids, 20, replace=False))), 5)
    print(f"[{name}] with {n_circuits + 2} circuits stored: pairwise overlap median {pair:.1f} ms, "
          f"10-way consensus median {ten:.1f} ms, 20x20 matrix median {grid:.1f} ms")


def report_seconds(repeats: int = 3) -> None:
    """Print how long the report of 10 full GPT-2-small edge circuits takes to render (median)."""
    rng = np.random.default_rng(0)
    full = graph_for(GPT2).n_edges
    circuits = [circuit(rng, full, i) for i in range(10)]
    ms = median_ms(lambda: report_html(circuits), repeats)
    print(f"report of 10 circuits x {full} scored edges (diagrams of the top 300, heatmaps, consensus): "
          f"{ms / 1000:.2f} s (median of {repeats})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stores", default="sqlite,neo4j")
    ap.add_argument("--circuits", type=int, default=1000)
    ap.add_argument("--edges", type=int, default=2000)
    args = ap.parse_args()
    report_seconds()
    for name in filter(None, args.stores.split(",")):
        if name == "sqlite":
            with tempfile.TemporaryDirectory() as d, SqliteStore(f"sqlite:///{d}/bench.db") as s:
                bench(name, s, args.circuits, args.edges)
        elif name == "neo4j":
            uri = os.environ["CIRCAT_NEO4J_URI"]
            with GraphDatabase.driver(uri, auth=None) as d, d.session() as s:
                s.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()
            with Neo4jStore(uri) as s:
                bench(name, s, args.circuits, args.edges)
        else:
            raise SystemExit(f"unknown store {name!r}")


if __name__ == "__main__":
    main()
