"""Choosing a circuit from edge scores: top-n, score threshold, and pruning to input->logits paths.

Scores follow ``edge_attribution``: the first-order change of the metric when an edge is
ablated. An edge matters when ablating it *harms* the metric: for logit and probability
differences that is a negative score, for KL a positive one. ``signed`` ranking orders by harm;
``absolute`` by magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from circat.service.graph import ModelGraph
from circat.workers.tasks import Metric


def importance(scores: np.ndarray, metric: Metric, absolute: bool = True) -> np.ndarray:
    """Per-edge importance, larger is more important."""
    if absolute:
        return np.abs(scores)
    return Metric(metric).harm_sign * scores


def top_n(importance_: np.ndarray, n: int) -> np.ndarray:
    """Boolean mask of the ``n`` most important edges (ties broken by edge order)."""
    if not 0 <= n <= importance_.size:
        raise ValueError(f"top-n must be between 0 and {importance_.size}, got {n}")
    mask = np.zeros(importance_.size, dtype=bool)
    mask[np.argsort(-importance_, kind="stable")[:n]] = True
    return mask


SIZE_RATIO = 1.25
"""sizes are found to within this factor (the old fixed grid of 48 sizes stepped by about 1.27)"""


def smallest_sizes(faith_at: Callable[[list[int]], np.ndarray], n: int, levels: Sequence[float],
                   known: dict[int, float], ratio: float = SIZE_RATIO) -> list[tuple[int, float]]:
    """For each level, the smallest number of top edges whose faithfulness reaches it, and that faithfulness.

    Bisection in log size between the largest evaluated size below a hit and the smallest hit,
    seeded with ``known`` sizes (size 0 is the empty circuit, ``n`` the full model, faithfulness
    0 and 1); each round evaluates one size per unresolved level together, through ``faith_at``.
    """
    seen = {0: 0.0, n: 1.0} | known
    while True:
        pending = set()
        for level in levels:
            lo, hi = _bracket(seen, level)
            if hi - lo > 1 and (lo == 0 or hi / lo > ratio):
                mid = round(math.sqrt(max(lo, 1) * hi))
                pending.add(mid if lo < mid < hi else (lo + hi) // 2)
        if not pending:
            break
        sizes = sorted(pending)
        seen.update(zip(sizes, (float(f) for f in faith_at(sizes)), strict=True))
    return [(hi, seen[hi]) for hi in (_bracket(seen, level)[1] for level in levels)]


def _bracket(seen: dict[int, float], level: float) -> tuple[int, int]:
    """The smallest size reaching ``level`` and the largest evaluated size below it."""
    top = max(seen)
    hi = min(k for k, f in seen.items() if f >= level or k == top)
    return max(k for k in seen if k < hi) if hi > 0 else 0, hi


def above(importance_: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the edges whose importance is at least ``threshold``."""
    if not np.isfinite(threshold):
        raise ValueError(f"score threshold must be a finite number, got {threshold}")
    return importance_ >= threshold


def prune(graph: ModelGraph, mask: np.ndarray) -> np.ndarray:
    """Keep only edges on some path from ``input`` to ``logits`` (no dangling nodes)."""
    src, dst = graph.edge_src, graph.edge_dst
    reach = np.zeros(graph.n_nodes, dtype=bool)
    reach[0] = True
    for node in range(1, graph.n_nodes):
        into = mask & (dst == node)
        reach[node] = bool(reach[src[into]].any())
    coreach = np.zeros(graph.n_nodes, dtype=bool)
    coreach[graph.n_nodes - 1] = True
    for node in range(graph.n_nodes - 2, -1, -1):
        out = mask & (src == node)
        coreach[node] = bool(coreach[dst[out]].any())
    return mask & reach[src] & coreach[dst]
