"""Where a Neo4j circuit write spends its time: driver timings per statement, and the link's db hits.

Run with scripts/bench.sh neo4j_profile [--circuits 100] [--edges 2000]. Stores one full GPT-2-small
circuit (so every ``Edge`` node exists) and 50 warm-up circuits, then times each step of storing
``--circuits`` circuits of ``--edges`` random edges, one transaction each, exactly as the store does:
model lock and id check, circuit node, ``HAS_NODE``, ``HAS_EDGE``, commit (medians). Then ``PROFILE``s
the edge-link statement and the bare index lookups (db hits; a rolled-back transaction). Neo4j comes
from CIRCAT_NEO4J_URI (scripts/bench.sh starts one) and is wiped.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from bench.catalogue import GPT2, circuit, wipe_neo4j
from circat.service.graph import graph_for
from circat.service.stores import neo4j as n4

STEPS = ("model lock + id check", "circuit node", "HAS_NODE", "HAS_EDGE", "commit")


def db_hits(plan: dict[str, Any]) -> int:
    return int(plan.get("dbHits", 0)) + sum(db_hits(child) for child in plan.get("children", []))


def step_times(store: n4.Neo4jStore, rng: np.random.Generator, n: int, edges: int) -> dict[str, list[float]]:
    """Milliseconds of each write step, per circuit."""
    times: dict[str, list[float]] = {k: [] for k in STEPS}
    for i in range(n):
        c = circuit(rng, edges, 10_000 + i)
        with store.driver.session() as s:
            marks = [time.perf_counter()]
            tx = s.begin_transaction()
            n4._lock_model(tx, "gpt2", c.shape)
            tx.run("MATCH (c:Circuit {id: $id}) RETURN 1", id=c.id).consume()
            marks.append(time.perf_counter())
            n4._create_circuit(tx, c, c.id)
            marks.append(time.perf_counter())
            n4._link(tx, c.id, "gpt2", "Component", "HAS_NODE", c.node_mask, c.node_scores)
            marks.append(time.perf_counter())
            n4._link_edges(tx, c.id, "gpt2", c.graph, c.edge_mask, c.edge_scores)
            marks.append(time.perf_counter())
            tx.commit()
            marks.append(time.perf_counter())
        for k, a, b in zip(STEPS, marks, marks[1:], strict=False):
            times[k].append(1000 * (b - a))
    return times


def profile_link(store: n4.Neo4jStore, rng: np.random.Generator, edges: int) -> None:
    """db hits of the edge-link statement and of its index lookups alone, on one circuit (rolled back)."""
    c = circuit(rng, edges, 99_999)
    idx = np.flatnonzero(c.edge_mask).tolist()
    link = f"PROFILE {n4.LINK_EXISTING_EDGES}"
    lookups = "PROFILE UNWIND $idx AS i MATCH (x:Edge {model: $model, idx: i}) RETURN count(x)"
    with store.driver.session() as s:
        tx = s.begin_transaction()
        n4._lock_model(tx, "gpt2", c.shape)
        n4._create_circuit(tx, c, c.id)
        for label, query in (("edge link", link), ("index lookups alone", lookups)):
            summary = tx.run(query, id=c.id, model="gpt2", idx=idx, s=[1.0] * len(idx)).consume()
            hits = db_hits(summary.profile or {})
            print(f"PROFILE {label}: {hits:,} db hits = {hits / len(idx):.1f} per edge")
        tx.rollback()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--circuits", type=int, default=100)
    ap.add_argument("--edges", type=int, default=2000)
    args = ap.parse_args()
    uri = os.environ["CIRCAT_NEO4J_URI"]
    wipe_neo4j(uri)
    rng = np.random.default_rng(0)
    with n4.Neo4jStore(uri) as store:
        store.put(circuit(rng, graph_for(GPT2).n_edges, -1))
        store.put_many([circuit(rng, args.edges, i) for i in range(50)])
        times = step_times(store, rng, args.circuits, args.edges)
        total = float(np.median(np.sum([times[k] for k in STEPS], axis=0)))
        for k in STEPS:
            print(f"{k:22s} median {np.median(times[k]):6.1f} ms")
        print(f"{'total':22s} median {total:6.1f} ms = {args.edges / total * 1000:,.0f} edges/s")
        profile_link(store, rng, args.edges)


if __name__ == "__main__":
    main()
