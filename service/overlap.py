"""Overlap algebra over circuits' in-graph items: pairwise, consensus, matrix, difference.

Pure functions on ``Membership`` index vectors, shared by every store, so both stores answer
alike. Node level counts heads and MLPs only (``input`` and ``logits`` belong to every
circuit); edge level is answered only where every circuit involved has edges. Every answer
carries what chance would give (``service.null``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from circat.service.graph import ModelGraph, graph_for
from circat.service.null import UNIFORM, Chance, Draws, NullSpec, consensus_chance, pair_chance
from circat.service.stores.base import Membership
from circat.service.types import Level, NullModel

if TYPE_CHECKING:
    from circat.service.stability import RunComparison


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
    chance: Chance
    """the null model's expected shared count and Jaccard, and the tail probability of this overlap"""
    runs: RunComparison | None = None
    """where both circuits come from resampled runs: their cross-run Jaccards against each run's own"""

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
    chance: Chance
    """the null model's expected number of items this well supported, and the tail probability of this many"""


@dataclass(frozen=True)
class Matrix:
    """Pairwise Jaccard matrix, with each cell's expected Jaccard and tail probability under the null model;
    ``None`` where a pair has no common level (the diagonal's null figures are those of two circuits alike)."""

    ids: list[str]
    node: list[list[float]]
    edge: list[list[float | None]]
    null: NullModel
    samples: int
    node_expected: list[list[float]]
    node_p: list[list[float]]
    edge_expected: list[list[float | None]]
    edge_p: list[list[float | None]]


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


def pairwise(a: Membership, b: Membership, null: NullSpec = UNIFORM) -> list[PairOverlap]:
    """Shared items, Jaccard and containment both ways, and what chance gives, at each level both circuits have."""
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
            b_in_a=_ratio(len(shared), len(ib)), chance=pair_chance(g, level, len(ia), len(ib), len(shared), null),
        ))
    return out


def consensus(members: list[Membership], min_support: int | None = None,
              null: NullSpec = UNIFORM) -> list[Consensus]:
    """Items in at least ``min_support`` (default: all) of the circuits, with support counts and what chance
    gives."""
    g = _graph(members)
    n = len(members)
    k = n if min_support is None else min_support
    if not 1 <= k <= n:
        raise OverlapError(f"min_support must be between 1 and {n} (the number of circuits), got {k}")
    out = []
    for level in levels(members):
        counts, sizes = _counts(members, level, g)
        keep = np.flatnonzero(counts >= k)
        out.append(Consensus(level, n, k, _named_support(g, level, counts, keep),
                             consensus_chance(g, level, sizes, k, len(keep), null)))
    return out


def _counts(members: list[Membership], level: Level, g: ModelGraph) -> tuple[np.ndarray, list[int]]:
    """How many of the circuits hold each item of ``level``, and each circuit's size there."""
    counts = np.zeros(g.n_nodes if level is Level.NODE else g.n_edges, dtype=np.int64)
    sizes = []
    for m in members:
        items = _items(m, level, g)
        assert items is not None
        counts[items] += 1
        sizes.append(len(items))
    return counts, sizes


def _named_support(g: ModelGraph, level: Level, counts: np.ndarray, keep: np.ndarray) -> dict[str, int]:
    """The support of the items ``keep`` by name, most supported first (then graph order)."""
    order = sorted(keep, key=lambda i: (-counts[i], i))
    return {name: int(counts[i]) for name, i in zip(g.names(level, order), order, strict=True)}


def support(members: list[Membership], level: Level) -> dict[str, int]:
    """Every item held by any of the circuits at ``level``, with how many hold it (the consensus at support 1,
    without its null model)."""
    g = _graph(members)
    counts, _ = _counts(members, level, g)
    return _named_support(g, level, counts, np.flatnonzero(counts))


def jaccard_grid(members: list[Membership], level: Level) -> np.ndarray:
    """The Jaccard of every pair of the circuits at ``level`` (each must have it), as one matrix."""
    g = _graph(members)
    sets = [_items(m, level, g) for m in members]
    if any(s is None for s in sets):
        raise OverlapError(f"{level.value} level needs every circuit to have edges")
    return _shared_grid(sets, g.n_nodes if level is Level.NODE else g.n_edges)[1]


def _shared_grid(sets: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shared counts and Jaccard of every pair of index sets, as one matrix product of membership masks."""
    masks = np.zeros((len(sets), size), dtype=np.float32)
    for row, items in zip(masks, sets, strict=True):
        row[items] = 1.0
    inter = (masks @ masks.T).astype(np.float64)  # exact: counts stay far below float32's 2**24
    sizes = masks.sum(axis=1, dtype=np.float64)
    union = sizes[:, None] + sizes[None, :] - inter
    return inter.astype(np.int64), np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _level_grid(g: ModelGraph, level: Level, sets: list[np.ndarray], rows: list[int], n: int,
                null: NullSpec) -> tuple[list[list[float | None]], ...]:
    """Jaccard, expected Jaccard and p of the circuits at ``rows`` (of ``n``), ``None`` elsewhere."""
    shared, jaccard = _shared_grid(sets, g.n_nodes if level is Level.NODE else g.n_edges)
    grids: tuple[list[list[float | None]], ...] = tuple([[None] * n for _ in range(n)] for _ in range(3))
    made: Draws = {}
    for a, i in enumerate(rows):
        for b, j in enumerate(rows[a:], start=a):  # symmetric: the lower triangle mirrors the upper
            chance = pair_chance(g, level, len(sets[a]), len(sets[b]), int(shared[a, b]), null, made)
            for x, y in ((i, j), (j, i)):
                grids[0][x][y], grids[1][x][y], grids[2][x][y] = float(jaccard[a, b]), chance.expected_jaccard, chance.p
    return grids


def matrix(members: list[Membership], null: NullSpec = UNIFORM) -> Matrix:
    """The pairwise Jaccard matrix at node level and, where both have edges, edge level, with the null model's
    expected Jaccard and tail probability per cell."""
    g = _graph(members)
    n = len(members)
    node, node_expected, node_p = _level_grid(g, Level.NODE, [_items(m, Level.NODE, g) for m in members],
                                              list(range(n)), n, null)
    with_edges = [i for i, m in enumerate(members) if m.edges is not None]
    edge, edge_expected, edge_p = _level_grid(g, Level.EDGE, [members[i].edges for i in with_edges], with_edges,
                                              n, null)
    sampled = null.model is NullModel.CONNECTED and bool(with_edges)
    return Matrix([m.id for m in members], node, edge, null.model if sampled else NullModel.UNIFORM,
                  null.samples if sampled else 0, node_expected, node_p, edge_expected, edge_p)


def difference(a: Membership, b: Membership) -> dict[Level, list[str]]:
    """Items of ``a`` that ``b`` lacks, at each level both have."""
    g = _graph([a, b])
    out: dict[Level, list[str]] = {}
    for level in levels([a, b]):
        ia, ib = _items(a, level, g), _items(b, level, g)
        out[level] = g.names(level, np.setdiff1d(ia, ib))
    return out
