"""Stability of resampled discovery: how alike the circuits of R prompt sets are, and how two runs compare.

A run with ``resamples`` R draws R prompt sets (seeds ``seed``, ``seed + 1``, ..., ``seed + R - 1``) and stores
each set's circuits. Its stability record keeps, per circuit level (the i-th circuit of every resample: one per
faithfulness target, or the top-n circuit, or the circuit a path method builds), the R circuits, the mean,
standard deviation and range of their pairwise Jaccard at node and edge level (the overlap algebra's
``jaccard_grid``), and each item's frequency: its support across the resamples (``support``) over R.

Two runs compare at one level through the Jaccard of every cross-run pair: their mean and 95 % percentile
interval, against each run's own within-run mean, with a permutation p: the share of the splits of the pooled
circuits into two groups of the runs' sizes whose within-minus-between gap is at least the observed one (every
split when there are fewer than ``PERMUTATIONS``, an exact test; else that many drawn at random, seeded).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from circat.service.overlap import OverlapError, jaccard_grid, levels, support
from circat.service.stores.base import Membership
from circat.service.types import Level

PERMUTATIONS = 2000
"""label permutations of a run comparison's test"""
DIFFER_P = 0.05
"""below this p, two runs' circuits differ more than the resamples of each do"""


@dataclass(frozen=True)
class Spread:
    """Mean, standard deviation and range of the pairwise Jaccards of a set of circuits (``pairs`` of them)."""

    mean: float
    std: float
    min: float
    max: float
    pairs: int


@dataclass(frozen=True)
class LevelStability:
    """The circuits of one level across the resamples, how alike they are, and how often each item recurs."""

    key: str
    """the level: a faithfulness target (``0.8``), ACDC's ``tau-T``, ``top-N``, or ``circuit`` for a method's one
    circuit"""
    circuits: tuple[str, ...]
    """one per resample, in seed order"""
    node: Spread
    edge: Spread | None
    node_frequency: dict[str, float]
    """each head and MLP held by any of the circuits: the share of the circuits holding it, most frequent first"""
    edge_frequency: dict[str, float] | None

    def frequency_of(self, level: Level | str) -> dict[str, float]:
        """Each item's frequency at ``level`` (none at edge level for node circuits)."""
        return self.node_frequency if Level(level) is Level.NODE else self.edge_frequency or {}


@dataclass(frozen=True)
class StabilityRecord:
    """The stability summary of one resampled discovery run.

    Its id is a hash of the run's spec (which holds the resample count), so a rerun of the spec is a no-op.
    """

    model: str
    task: str
    method: str
    spec: str
    """the canonical JSON of the discovery spec that ran"""
    seeds: tuple[int, ...]
    levels: tuple[LevelStability, ...]
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def id(self) -> str:
        return "s" + hashlib.sha256(self.spec.encode()).hexdigest()[:23]

    @property
    def circuits(self) -> list[str]:
        """Every circuit of the run, level by level."""
        return [c for lv in self.levels for c in lv.circuits]

    def level_of(self, circuit_id: str) -> LevelStability | None:
        """The level holding ``circuit_id``, if the run made it."""
        return next((lv for lv in self.levels if circuit_id in lv.circuits), None)

    def view(self) -> dict[str, Any]:
        """The record as the CLI and the API show it: every field and its id."""
        return asdict(self) | {"id": self.id}

    def summary_json(self) -> dict[str, Any]:
        """What the stores keep as one document: the levels (spreads and frequencies)."""
        return {"levels": [asdict(lv) for lv in self.levels]}

    @staticmethod
    def from_stored(model: str, task: str, method: str, spec: str, seeds: list[int], summary: dict[str, Any],
                    created_at: datetime) -> StabilityRecord:
        """A record from its stored fields and ``summary_json`` document."""
        return StabilityRecord(model, task, method, spec, tuple(seeds),
                               tuple(_level(d) for d in summary["levels"]), created_at)


def _level(d: dict[str, Any]) -> LevelStability:
    return LevelStability(d["key"], tuple(d["circuits"]), Spread(**d["node"]),
                          None if d["edge"] is None else Spread(**d["edge"]), d["node_frequency"],
                          d["edge_frequency"])


def level_key(params: dict[str, Any]) -> str:
    """Which level of a run a circuit is, from its params: its faithfulness target, else ACDC's ``tau-T``, else
    ``top-N``, else ``circuit`` (a method's one circuit)."""
    if params.get("level") is not None:
        return f"{params['level']:g}"
    if params.get("tau") is not None:
        return f"tau-{params['tau']:g}"
    return f"top-{params['top_n']}" if params.get("top_n") is not None else "circuit"


def spread(grid: np.ndarray) -> Spread:
    """The spread of the pairwise values above the diagonal of a symmetric ``grid`` (all 1 for one circuit)."""
    values = grid[np.triu_indices(len(grid), k=1)]
    if not len(values):
        return Spread(1.0, 0.0, 1.0, 1.0, 0)
    return Spread(float(values.mean()), float(values.std()), float(values.min()), float(values.max()), len(values))


def level_stability(key: str, members: list[Membership]) -> LevelStability:
    """The stability of one level from the memberships of its circuits, one per resample."""
    n = len(members)
    by_level = {lv: (spread(jaccard_grid(members, lv)), {k: v / n for k, v in support(members, lv).items()})
                for lv in levels(members)}
    node, edge = by_level[Level.NODE], by_level.get(Level.EDGE)
    return LevelStability(key, tuple(m.id for m in members), node[0], edge and edge[0], node[1], edge and edge[1])


@dataclass(frozen=True)
class RunComparison:
    """Two resampled runs at one level: the Jaccards of their cross-run pairs against each run's own."""

    level: Level
    runs: tuple[str, str]
    """the stability records of the two circuits' runs"""
    pairs: int
    between: float
    """mean Jaccard of a circuit of one run and one of the other"""
    low: float
    high: float
    """the 2.5th and 97.5th percentiles of those cross-run Jaccards"""
    within_a: float
    within_b: float
    """each run's mean pairwise Jaccard among its own resamples"""
    p: float
    """permutation p of the gap (mean within) - (mean between) being this large if the runs were alike"""
    differ: bool
    """the cross-run Jaccard lies below both within-run means and p < ``DIFFER_P``"""


def compare_runs(a: list[Membership], b: list[Membership], level: Level, runs: tuple[str, str],
                 permutations: int = PERMUTATIONS, seed: int = 0) -> RunComparison:
    """Compare the circuits ``a`` of one run with ``b`` of another at ``level`` (each run needs 2 or more)."""
    if len(a) < 2 or len(b) < 2:
        raise OverlapError("comparing runs needs at least 2 circuits of each run")
    grid = jaccard_grid([*a, *b], level)
    na = len(a)
    cross = grid[:na, na:].ravel()
    observed = np.zeros((1, len(grid)))
    observed[0, :na] = 1
    splits = _splits(len(grid), na, permutations, seed)
    gaps = _gaps(grid, splits, na, len(b))
    at_least = np.count_nonzero(gaps >= _gaps(grid, observed, na, len(b))[0] - 1e-12)
    exact = len(splits) < permutations
    p = float(at_least / len(splits) if exact else (1 + at_least) / (1 + len(splits)))
    within_a, within_b = spread(grid[:na, :na]).mean, spread(grid[na:, na:]).mean
    between = float(cross.mean())
    low, high = np.percentile(cross, [2.5, 97.5])
    return RunComparison(level, runs, len(cross), between, float(low), float(high), within_a, within_b, p,
                         between < min(within_a, within_b) and p < DIFFER_P)


def _splits(n: int, na: int, permutations: int, seed: int) -> np.ndarray:
    """Labellings (1: group a) of ``n`` circuits with ``na`` in group a: every one when there are fewer than
    ``permutations`` (an exact test), else ``permutations`` drawn at random (seeded)."""
    if math.comb(n, na) < permutations:
        picks = list(itertools.combinations(range(n), na))
    else:
        rng = np.random.default_rng(seed)
        picks = [rng.permutation(n)[:na] for _ in range(permutations)]
    labels = np.zeros((len(picks), n))
    for row, pick in zip(labels, picks, strict=True):
        row[list(pick)] = 1
    return labels


def _gaps(grid: np.ndarray, labels: np.ndarray, na: int, nb: int) -> np.ndarray:
    """Per labelling (1: group a), mean within-group Jaccard minus mean between-group Jaccard."""
    other = 1 - labels
    off = grid - np.eye(len(grid))
    within = ((labels @ off) * labels).sum(axis=1) + ((other @ off) * other).sum(axis=1)
    between = ((labels @ grid) * other).sum(axis=1)
    return within / (na * (na - 1) + nb * (nb - 1)) - between / (na * nb)

