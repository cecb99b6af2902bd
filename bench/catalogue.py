"""Catalogue benchmark: ingest, query latency at scale and footprint on each store, and report rendering.

Run with scripts/bench.sh catalogue [--stores sqlite,neo4j] [--circuits 1000] [--edges 2000] [--big 20].
Ingests one GPT-2-small circuit of all 32,491 scored edges, ``--circuits`` GPT-2-small circuits of
``--edges`` random edges (one transaction each, then again through the bulk path), and ``--big``
circuits of 5 % of a Llama-3.1-8B-shaped graph's 1.59 M edges; with the GPT-2-small circuits
stored, and again with the big ones too, the median and p95 of pairwise overlap, 10-way consensus,
a 20x20 matrix, the circuits holding one head and a filtered list page; and the store's disk (and,
for Neo4j, server memory) per stored edge. Neo4j comes
from CIRCAT_NEO4J_URI (scripts/bench.sh starts one) and is wiped. The report figure: the HTML report
of 10 GPT-2-small circuits holding all 32,491 edges, scored (``--stores ''`` measures only that).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from neo4j import GraphDatabase
from rich.progress import track

from circat.service.catalogue import Catalogue
from circat.service.circuit import Circuit, Provenance
from circat.service.graph import graph_for
from circat.service.report.page import report_html
from circat.service.stores import CircuitFilter, CircuitStore
from circat.service.stores.neo4j import Neo4jStore
from circat.service.stores.sqlite import SqliteStore
from circat.service.types import ModelShape

GPT2 = ModelShape(12, 12, False, 768)
LLAMA_8B = ModelShape(32, 32, False, 4096)  # Llama-3.1-8B with its grouped k/v heads ungrouped
BULK = 50  # circuits per transaction on the bulk path


def circuit(rng: np.random.Generator, n_edges: int, i: int, model: str = "gpt2", shape: ModelShape = GPT2) -> Circuit:
    """An edge circuit of ``model`` with ``n_edges`` random scored edges."""
    g = graph_for(shape)
    mask = np.zeros(g.n_edges, dtype=bool)
    mask[rng.choice(g.n_edges, size=n_edges, replace=False)] = True
    scores = np.where(mask, rng.normal(size=g.n_edges), np.nan)
    return Circuit(
        provenance=Provenance(model=model, task=f"task{i % 7}", method="bench", params={"i": i},
                              faithfulness=float(rng.uniform())),
        shape=shape, node_mask=g.endpoint_mask(mask), node_scores=np.full(g.n_nodes, np.nan),
        edge_mask=mask, edge_scores=scores,
    )


def timings_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median and p95 of ``repeats`` calls, in ms."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times), float(np.percentile(times, 95))


def ingest(name: str, label: str, store: CircuitStore, circuits: Iterator[Circuit], n: int, bulk: bool) -> list[str]:
    """Store ``n`` circuits one transaction each (or ``BULK`` a transaction: ``circat import --bulk``, ``POST
    /circuits:batch``), validated as every import is, and print the rate."""
    ids: list[str] = []
    edges, batch = 0, []
    t = time.perf_counter()
    cat = Catalogue(store)
    for c in track(circuits, total=n, description=f"[{name}] {label}", transient=True):
        edges += c.n_edges
        batch.append(c)
        if len(batch) == (BULK if bulk else 1):
            ids += stored(cat, batch)
            batch = []
    ids += stored(cat, batch) if batch else []
    s = time.perf_counter() - t
    print(f"[{name}] ingest {label}: {s:.1f} s = {edges / s:,.0f} edges/s, {n / s:.1f} circuits/s")
    return ids


def stored(cat: Catalogue, batch: list[Circuit]) -> list[str]:
    """Store ``batch`` through the catalogue's bulk path (one transaction when all are good); their ids."""
    out = cat.add_batch(batch, per_transaction=len(batch))
    if refused := [o for o in out if isinstance(o, Exception)]:
        raise SystemExit(f"bench circuit refused: {refused[0]}")
    return [o.id for o in out if not isinstance(o, Exception)]


def queries(name: str, store: CircuitStore, ids: list[str], stored: int) -> None:
    """Median and p95 of the overlap queries, the head lookup and a list page, with ``stored`` circuits."""
    cat, pick = Catalogue(store), np.random.default_rng(1)
    figures = {
        "pairwise overlap": timings_ms(lambda: cat.overlap(*pick.choice(ids, 2, replace=False)), 50),
        "10-way consensus": timings_ms(lambda: cat.consensus(list(pick.choice(ids, 10, replace=False)), 5), 20),
        "20x20 matrix": timings_ms(lambda: cat.matrix(list(pick.choice(ids, 20, replace=False))), 5),
        "circuits holding a5.h3": timings_ms(lambda: cat.containing("gpt2", "a5.h3"), 10),
        "list page (task, min faithfulness)": timings_ms(
            lambda: store.summaries(CircuitFilter(model="gpt2", task="task3", min_faithfulness=0.5), 50), 20),
    }
    for what, (med, p95) in figures.items():
        print(f"[{name}] with {stored:,} circuits stored: {what} median {med:.1f} ms, p95 {p95:.1f} ms")


def footprint(name: str, edges: int, disk: int, memory: int | None) -> None:
    mem = f", server memory (RSS) {memory / edges:.0f} B/edge" if memory else ""
    print(f"[{name}] {edges:,} stored edge memberships: disk {disk / 2**20:,.0f} MiB = {disk / edges:.0f} B/edge{mem}")


def bench(name: str, store: CircuitStore, args: argparse.Namespace) -> int:
    """Run every ingest and query figure on ``store``; the number of edge memberships stored."""
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    store.put(circuit(rng, 1, -2))
    print(f"[{name}] first circuit of a new model (registers its components): {time.perf_counter() - t:.2f} s")
    full = circuit(rng, graph_for(GPT2).n_edges, -1)
    t = time.perf_counter()
    store.put(full)
    one = time.perf_counter() - t
    print(f"[{name}] ingest one GPT-2-small circuit, {full.n_edges:,} scored edges: {one:.2f} s "
          f"= {full.n_edges / one:,.0f} edges/s")
    half = args.circuits // 2
    ids = ingest(name, f"{half:,} circuits of {args.edges} edges, one transaction each", store,
                 (circuit(rng, args.edges, i) for i in range(half)), half, bulk=False)
    ids += ingest(name, f"{args.circuits - half:,} circuits of {args.edges} edges, {BULK} a transaction", store,
                  (circuit(rng, args.edges, i) for i in range(half, args.circuits)), args.circuits - half, bulk=True)
    queries(name, store, ids, args.circuits + 2)
    big_edges = graph_for(LLAMA_8B).n_edges // 20
    if args.big:
        ingest(name, f"{args.big} Llama-3.1-8B-shaped circuits of {big_edges:,} edges (5 %)", store,
               (circuit(rng, big_edges, i, "llama-3.1-8b", LLAMA_8B) for i in range(args.big)), args.big, bulk=False)
        queries(name, store, ids, args.circuits + args.big + 2)
    return 1 + full.n_edges + args.circuits * args.edges + args.big * big_edges


def report_seconds(repeats: int = 3) -> None:
    """Print how long the report of 10 full GPT-2-small edge circuits takes to render (median)."""
    rng = np.random.default_rng(0)
    full = graph_for(GPT2).n_edges
    circuits = [circuit(rng, full, i) for i in range(10)]
    ms, _ = timings_ms(lambda: report_html(circuits), repeats)
    print(f"report of 10 circuits x {full} scored edges (diagrams of the top 300, heatmaps, consensus): "
          f"{ms / 1000:.2f} s (median of {repeats})")


def wipe_neo4j(uri: str) -> None:
    """Delete everything in the benchmark's Neo4j (the one scripts/bench.sh started), 100 nodes to a transaction
    (a node of a large catalogue carries thousands of relationships; 10,000 at once exceeded the memory pool)."""
    with GraphDatabase.driver(uri, auth=None) as d, d.session() as s:
        s.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 100 ROWS").consume()


def du(path: str) -> int:
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True).stdout.split()[0])


def rss(pid: str) -> int | None:
    status = Path(f"/proc/{pid}/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stores", default="sqlite,neo4j")
    ap.add_argument("--circuits", type=int, default=1000, help="GPT-2-small circuits (half bulk)")
    ap.add_argument("--edges", type=int, default=2000, help="edges per GPT-2-small circuit")
    ap.add_argument("--big", type=int, default=20, help="Llama-3.1-8B-shaped circuits of 5 %% of its edges")
    args = ap.parse_args()
    report_seconds()
    for name in filter(None, args.stores.split(",")):
        if name == "sqlite":
            with tempfile.TemporaryDirectory() as d, SqliteStore(f"sqlite:///{d}/bench.db") as s:
                footprint(name, bench(name, s, args), du(d), None)
        elif name == "neo4j":
            uri = os.environ["CIRCAT_NEO4J_URI"]
            wipe_neo4j(uri)
            with Neo4jStore(uri) as s:
                edges = bench(name, s, args)
            if data := os.environ.get("CIRCAT_NEO4J_DATA"):
                footprint(name, edges, du(data), rss(os.environ.get("CIRCAT_NEO4J_PID", "")))
        else:
            raise SystemExit(f"unknown store {name!r}")


if __name__ == "__main__":
    main()
