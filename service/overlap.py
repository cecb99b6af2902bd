"""Overlap algebra over circuits' in-graph items: pairwise, consensus, matrix, difference.

Pure functions on ``Membership`` index vectors, shared by every store, so both stores answer
alike. Node level counts heads and MLPs only (``input`` and ``logits`` belong to every
circuit); edge level is answered only where every circuit involved has edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.graph import ModelGraph, graph_for
from service.stores.base import Membership
from service.types import Level


class OverlapError(ValueError):
    """Circuits that cannot be compared (different models, too few, bad support)."""


@dataclass(frozen=True)
class PairOverlap:
    """How two circuits overlap at one level."""

    level: Level
    size_a: int
    size_b: int
    shared: list[str]
    jaccard: float
    a_in_b: float
    b_in_a: float

    @property
    def n_shared(self) -> int:
        return len(self.shared)


@dataclass(frozen=True)
class Consensus:
    """Items held by at least ``min_support`` of ``n_circuits`` circuits, with their support."""

    level: Level
    n_circuits: int
    min_support: int
    support: dict[str, int]


@dataclass(frozen=True)
class Matrix:
    """Pairwise Jaccard matrix; ``None`` where a pair has no common level."""

    ids: list[str]
    node: list[list[float]]
    edge: list[list[float | None]]


def _graph(members: list[Membership]) -> ModelGraph:
    if not members:
        raise OverlapError("no circuits given")
    models = sorted({m.model for m in members})
    if len(models) > 1:
        raise OverlapError(f"circuits belong to different models ({', '.join(models)}); overlap needs one model")
    return graph_for(members[0].shape)


def _items(m: Membership, level: Level, g: ModelGraph) -> np.ndarray | None:
    if level is Level.EDGE:
        return m.edges
    return m.nodes[g.component_mask[m.nodes]]


def levels(members: list[Membership]) -> list[Level]:
    """Node level always; edge level when every circuit has edges."""
    return [Level.NODE, Level.EDGE] if all(m.edges is not None for m in members) else [Level.NODE]


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def pairwise(a: Membership, b: Membership) -> list[PairOverlap]:
    """Shared items, Jaccard and containment both ways, at each level both circuits have."""
    g = _graph([a, b])
    out = []
    for level in levels([a, b]):
        ia, ib = _items(a, level, g), _items(b, level, g)
        assert ia is not None and ib is not None
        shared = np.intersect1d(ia, ib)
        union = len(ia) + len(ib) - len(shared)
        out.append(PairOverlap(
            level=level, size_a=len(ia), size_b=len(ib), shared=g.names(level, shared),
            jaccard=_ratio(len(shared), union), a_in_b=_ratio(len(shared), len(ia)),
            b_in_a=_ratio(len(shared), len(ib)),
        ))
    return out


def consensus(members: list[Membership], min_support: int | None = None) -> list[Consensus]:
    """Items in at least ``min_support`` (default: all) of the circuits, with support counts."""
    g = _graph(members)
    n = len(members)
    k = n if min_support is None else min_support
    if not 1 <= k <= n:
        raise OverlapError(f"min_support must be between 1 and {n} (the number of circuits), got {k}")
    out = []
    for level in levels(members):
        size = g.n_nodes if level is Level.NODE else g.n_edges
        counts = np.zeros(size, dtype=np.int64)
        for m in members:
            items = _items(m, level, g)
            assert items is not None
            counts[items] += 1
        keep = np.flatnonzero(counts >= k)
        order = sorted(keep, key=lambda i: (-counts[i], i))
        names = g.names(level, order)
        out.append(Consensus(level, n, k, {name: int(counts[i]) for name, i in zip(names, order, strict=True)}))
    return out


def _jaccard_grid(sets: list[np.ndarray], size: int) -> np.ndarray:
    """Jaccard of every pair of index sets, as one matrix product of membership masks."""
    masks = np.zeros((len(sets), size), dtype=np.float32)
    for row, items in zip(masks, sets, strict=True):
        row[items] = 1.0
    inter = masks @ masks.T
    sizes = masks.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def matrix(members: list[Membership]) -> Matrix:
    """The pairwise Jaccard matrix at node level and, where both have edges, edge level."""
    g = _graph(members)
    nodes = _jaccard_grid([_items(m, Level.NODE, g) for m in members], g.n_nodes)
    node = [[float(x) for x in row] for row in nodes]
    with_edges = [i for i, m in enumerate(members) if m.edges is not None]
    edges = _jaccard_grid([members[i].edges for i in with_edges], g.n_edges)
    edge: list[list[float | None]] = [[None] * len(members) for _ in members]
    for a, i in enumerate(with_edges):
        for b, j in enumerate(with_edges):
            edge[i][j] = float(edges[a, b])
    return Matrix([m.id for m in members], node, edge)


def difference(a: Membership, b: Membership) -> dict[Level, list[str]]:
    """Items of ``a`` that ``b`` lacks, at each level both have."""
    g = _graph([a, b])
    out: dict[Level, list[str]] = {}
    for level in levels([a, b]):
        ia, ib = _items(a, level, g), _items(b, level, g)
        out[level] = g.names(level, np.setdiff1d(ia, ib))
    return out
