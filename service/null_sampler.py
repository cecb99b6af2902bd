"""Random connected edge circuits: the connected null model's draws (``--null connected``).

A circuit is connected when every edge lies on an ``input -> logits`` path inside it. The sampler keeps that
true after every step, starting from no edges (the circuit's nodes: ``input`` and ``logits``):

1. Let ``r`` be the number of edges still to add. A *bridge* adds a component ``w`` not yet in the circuit with
   one edge into it from a circuit node before it (any port) and one edge out of it to a circuit node after it
   (2 edges); a *chord* adds one edge of the model graph, not yet held, between two circuit nodes (1 edge).
2. Every possible addition counts once: each outside component is one bridge, each free edge one chord. One is
   picked uniformly among them (only chords when ``r = 1``); a bridge's two edges are picked uniformly among
   the ones that fit.
3. Repeat until the circuit has the asked number of edges. If no addition fits (``r = 1`` and every edge
   among the circuit's nodes is held), the draw starts again.

Every edge added joins two nodes each already on an ``input -> logits`` path, so the result is connected. The
draws are not uniform over connected subgraphs (nobody knows how to draw those fast); they grow circuits as
discovery finds them, a few components densely wired. Seeded by the caller's generator, so reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from circat.service.graph import ModelGraph


@dataclass(frozen=True, eq=False)
class _Adjacency:
    """Per node, the edges into it and out of it (edge indices)."""

    into: tuple[np.ndarray, ...]
    out: tuple[np.ndarray, ...]


@lru_cache(maxsize=8)
def _adjacency(graph: ModelGraph) -> _Adjacency:
    order_in, order_out = np.argsort(graph.edge_dst, kind="stable"), np.argsort(graph.edge_src, kind="stable")
    cut_in = np.searchsorted(graph.edge_dst[order_in], np.arange(graph.n_nodes + 1))
    cut_out = np.searchsorted(graph.edge_src[order_out], np.arange(graph.n_nodes + 1))
    return _Adjacency(tuple(order_in[cut_in[i]:cut_in[i + 1]] for i in range(graph.n_nodes)),
                      tuple(order_out[cut_out[i]:cut_out[i + 1]] for i in range(graph.n_nodes)))


def connected_draws(graph: ModelGraph, size: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``samples`` random connected circuits of ``size`` edges, as edge indices ``[samples, size]``."""
    if not 0 <= size <= graph.n_edges:
        raise ValueError(f"a connected circuit of {size} edges does not fit a graph of {graph.n_edges} edges")
    out = np.zeros((samples, size), dtype=np.int64)
    for row in out:
        grown = None
        while grown is None:
            grown = _grow(graph, size, rng)
        row[:] = grown
    return out


def _grow(graph: ModelGraph, size: int, rng: np.random.Generator) -> np.ndarray | None:
    """The edges of one connected circuit of ``size`` edges; None when the draw got stuck.

    ``free[v]`` counts the chords into circuit node ``v``: a chord is drawn by its destination (weighted by
    those counts), then uniformly among that node's free edges from the circuit. Each step takes its choices
    from uniform numbers drawn up front (at most three a step)."""
    adj = _adjacency(graph)
    inside = np.zeros(graph.n_nodes, dtype=bool)
    inside[[0, graph.n_nodes - 1]] = True
    held = np.zeros(graph.n_edges, dtype=bool)
    free = np.zeros(graph.n_nodes, dtype=np.int64)
    free[-1] = 1  # input -> logits
    uniform = iter(rng.random(3 * size).tolist())
    added: list[int] = []
    chords, n_outside = 1, graph.n_nodes - 2
    while len(added) < size:
        bridges = n_outside if size - len(added) >= 2 else 0
        if chords + bridges == 0:
            return None
        pick = int(next(uniform) * (chords + bridges))
        if pick < chords:
            v = int(np.searchsorted(np.cumsum(free), pick, side="right"))
            into = adj.into[v]
            edge = int(_one(into[inside[graph.edge_src[into]] & ~held[into]], next(uniform)))
            held[edge], free[v], chords = True, free[v] - 1, chords - 1
            added.append(edge)
            continue
        w = int(np.flatnonzero(~inside)[pick - chords])
        into = adj.into[w][inside[graph.edge_src[adj.into[w]]]]
        out = adj.out[w][inside[graph.edge_dst[adj.out[w]]]]
        first, second = int(_one(into, next(uniform))), int(_one(out, next(uniform)))
        held[[first, second]] = True
        inside[w] = True
        free[w] += len(into) - 1
        np.add.at(free, graph.edge_dst[out], 1)
        free[graph.edge_dst[second]] -= 1
        chords, n_outside = chords + len(into) + len(out) - 2, n_outside - 1
        added += [first, second]
    return np.asarray(added, dtype=np.int64)


def _one(options: np.ndarray, u: float) -> int:
    """The option a uniform number ``u`` in [0, 1) picks."""
    return int(options[min(int(u * len(options)), len(options) - 1)])
