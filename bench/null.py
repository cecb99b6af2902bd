"""Null-model benchmark (figures, not a timed test): the null figures of a circuits x circuits Jaccard matrix.

Run with scripts/bench.sh null [--circuits 100] [--samples 200] [--connected-circuits 10].
Circuits are random GPT-2 small circuits (seeded): 10-60 components each, and 200-3000 edges each. Printed:

- the matrix without a null (the Jaccard grids alone), and with the exact uniform null at both levels;
  the issue's target: the null for a 100 x 100 matrix in under 1 s;
- the connected null (sampled, edge level) for a smaller matrix, and the time of one connected draw per edge.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from circat.service.graph import graph_for
from circat.service.null import NullSpec, uniform_pair
from circat.service.null_sampler import connected_draws
from circat.service.overlap import _shared_grid, matrix
from circat.service.stores.base import Membership
from circat.service.types import ModelShape, NullModel

GPT2 = ModelShape(12, 12, False, 768)


def _members(count: int, seed: int) -> list[Membership]:
    g = graph_for(GPT2)
    rng = np.random.default_rng(seed)
    components = np.flatnonzero(g.component_mask)
    out = []
    for i in range(count):
        nodes = np.sort(rng.choice(components, int(rng.integers(10, 61)), replace=False))
        edges = np.sort(rng.choice(g.n_edges, int(rng.integers(200, 3001)), replace=False))
        out.append(Membership(f"c{i}", "gpt2", GPT2, nodes, edges))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--circuits", type=int, default=100)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--connected-circuits", type=int, default=10)
    args = parser.parse_args()
    g = graph_for(GPT2)
    members = _members(args.circuits, 0)
    start = time.perf_counter()
    for sets, size in (([m.nodes for m in members], g.n_nodes), ([m.edges for m in members], g.n_edges)):
        _shared_grid(sets, size)
    grids = time.perf_counter() - start
    uniform_pair.cache_clear()
    start = time.perf_counter()
    matrix(members)
    full = time.perf_counter() - start
    print(f"{args.circuits} x {args.circuits} GPT-2 small circuits: Jaccard grids {grids:.3f} s; with the exact "
          f"uniform null at node and edge level {full:.3f} s (null: {full - grids:.3f} s; target < 1 s)")
    few = members[:args.connected_circuits]
    start = time.perf_counter()
    matrix(few, NullSpec(NullModel.CONNECTED, args.samples))
    connected = time.perf_counter() - start
    sizes = [len(m.edges) for m in few]
    start = time.perf_counter()
    connected_draws(g, 1000, 20, np.random.default_rng(0))
    per_draw = (time.perf_counter() - start) / 20
    print(f"{len(few)} x {len(few)} with the connected null ({args.samples} draws per size, edge sizes "
          f"{min(sizes)}-{max(sizes)}): {connected:.2f} s; one connected draw of 1000 edges: {per_draw * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
