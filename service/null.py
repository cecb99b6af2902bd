"""What chance gives for an overlap: the null models behind every overlap, consensus and matrix answer.

Two circuits of sizes ``a`` and ``b`` drawn at random from a universe of ``n`` items (the model's components at
node level, its edges at edge level) share ``K`` items. Under the uniform null ``K`` is hypergeometric, so the
expected shared count, the expected Jaccard ``E[K / (a + b - K)]`` and the tail ``P(K >= k)`` are exact sums over
its probability mass. Jaccard grows with ``K`` at fixed sizes, so that tail is also ``P(J >= observed J)``.

The items all of several circuits hold chain such hypergeometric steps (exact too). The connected null
(``service.null_sampler``) and the tail of a consensus held by fewer than all are answered from seeded
samples: an expectation is their mean and ``p = (1 + #{draws at least as extreme}) / (1 + samples)``, so a
sampled p is never below ``1 / (1 + samples)``.
At node level every set of components is connected (each has edges from ``input`` and to ``logits``), so the
connected null is the uniform one there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from circat.service.graph import ModelGraph
from circat.service.null_sampler import connected_draws
from circat.service.types import Level, NullModel

DEFAULT_SAMPLES = 200
WINDOW_SD = 12
WINDOW_PAD = 30


@dataclass(frozen=True)
class NullSpec:
    """Which null model to compare with, and for the sampled ones how many draws from which seed."""

    model: NullModel = NullModel.UNIFORM
    samples: int = DEFAULT_SAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")


UNIFORM = NullSpec()
"""the default: the exact uniform null (and, where a figure must be sampled, 200 draws from seed 0)"""


@dataclass(frozen=True)
class Chance:
    """What the null model gives for one overlap answer, and how likely the observed one is under it."""

    null: NullModel
    """the null model used (uniform at node level even where connected was asked: they are the same there)"""
    samples: int
    """draws behind the figures; 0 where they are exact"""
    expected_shared: float
    """the expected number of shared items"""
    expected_jaccard: float | None
    """the expected Jaccard (pairs only)"""
    p: float
    """the probability of sharing at least as much by chance"""


def sampled(level: Level, null: NullSpec, all_held: bool = True) -> bool:
    """Whether the figures at ``level`` are drawn rather than exact: the connected null at edge level, and the
    tail of a consensus of items held by fewer than all (``all_held`` false)."""
    return (null.model is NullModel.CONNECTED and level is Level.EDGE) or not all_held


def universe(graph: ModelGraph, level: Level) -> int:
    """How many items a circuit of ``graph`` can hold at ``level``: its components, or its edges."""
    return int(graph.component_mask.sum()) if level is Level.NODE else graph.n_edges


@lru_cache(maxsize=8)
def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])


def shared_pmf(n: int, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """The support ``k`` and probabilities ``P(K = k)`` of the items two uniform random sets of sizes ``a`` and
    ``b`` out of ``n`` share (hypergeometric), over the window of ``WINDOW_SD`` standard deviations (plus
    ``WINDOW_PAD``) around the mean: the mass beyond it is below 1e-15 (a Chernoff bound), so the figures are
    exact to that, and a 100 x 100 matrix of GPT-2 edge circuits needs no sums over thousands of terms."""
    if not (0 <= a <= n and 0 <= b <= n):
        raise ValueError(f"set sizes {a} and {b} must lie between 0 and the universe's {n}")
    lf = _log_factorials(n)
    mean = a * b / n if n else 0.0
    sd = np.sqrt(mean * (1 - b / n) * (n - a) / (n - 1)) if n > 1 else 0.0
    half = WINDOW_SD * sd + WINDOW_PAD
    k = np.arange(max(0, a + b - n, int(mean - half)), min(a, b, int(np.ceil(mean + half))) + 1)
    log_p = (lf[a] - lf[k] - lf[a - k]) + (lf[n - a] - lf[b - k] - lf[n - a - b + k]) - (lf[n] - lf[b] - lf[n - b])
    p = np.exp(log_p)
    return k, p / p.sum()


@lru_cache(maxsize=4096)
def uniform_pair(n: int, a: int, b: int, shared: int) -> Chance:
    """The exact uniform null for two circuits of sizes ``a`` and ``b`` that share ``shared`` of ``n`` items."""
    k, p = shared_pmf(n, a, b)
    return Chance(NullModel.UNIFORM, 0, float(k @ p), float(_jaccard(k, a, b) @ p),
                  float(min(1.0, p[k >= shared].sum())))


def _jaccard(shared: np.ndarray, a: int, b: int) -> np.ndarray:
    """Jaccard of sets of sizes ``a`` and ``b`` sharing ``shared`` items (0 for two empty sets)."""
    union = a + b - shared
    return np.divide(shared, union, out=np.zeros(len(shared)), where=union > 0)


Draws = dict[tuple[Level, int, int], np.ndarray]
"""draws already made in one answer, by (level, size, stream): a matrix draws each size once"""


def draws(graph: ModelGraph, level: Level, size: int, null: NullSpec, stream: int,
          made: Draws | None = None) -> np.ndarray:
    """``null.samples`` random circuits of ``size`` items as item indices ``[samples, size]``; seeded by the
    spec's seed, the size and ``stream`` (so the same size in two roles gives independent draws)."""
    if made is not None:
        key = (level, size, stream)
        if key not in made:
            made[key] = draws(graph, level, size, null, stream)
        return made[key]
    rng = np.random.default_rng([null.seed, size, stream])
    if null.model is NullModel.CONNECTED and level is Level.EDGE:
        return connected_draws(graph, size, null.samples, rng)
    if not size:
        return np.zeros((null.samples, 0), dtype=np.int64)
    noise = rng.random((null.samples, universe(graph, level)), dtype=np.float32)
    return np.argpartition(noise, size - 1, axis=1)[:, :size]


def _masks(indices: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(indices), n), dtype=bool)
    np.put_along_axis(out, indices, True, axis=1)
    return out


def pair_chance(graph: ModelGraph, level: Level, a: int, b: int, shared: int, null: NullSpec,
                made: Draws | None = None) -> Chance:
    """The null for two circuits of sizes ``a`` and ``b`` sharing ``shared`` items: exact where it can be."""
    n = universe(graph, level)
    if not sampled(level, null):
        return uniform_pair(n, a, b, shared)
    first, second = draws(graph, level, a, null, 0, made), draws(graph, level, b, null, 1, made)
    k = np.take_along_axis(_masks(first, n), second, axis=1).sum(axis=1)
    jaccard = _jaccard(k, a, b)
    return Chance(null.model, null.samples, float(k.mean()), float(jaccard.mean()),
                  _sampled_p(jaccard >= _jaccard(np.array([shared]), a, b)[0] - 1e-12))


def consensus_chance(graph: ModelGraph, level: Level, sizes: list[int], min_support: int, count: int,
                     null: NullSpec) -> Chance:
    """The null for the number of items held by at least ``min_support`` of circuits of ``sizes``: the expected
    count and the tail probability of ``count``. Under the uniform null, items held by all are exact, and
    otherwise the expectation is exact and the tail sampled; the connected null is sampled."""
    n = universe(graph, level)
    uniform = not sampled(level, null)
    if uniform and min_support == len(sizes):
        k, p = intersection_pmf(n, sizes)
        jaccard = uniform_pair(n, *sizes, count).expected_jaccard if len(sizes) == 2 else None
        return Chance(NullModel.UNIFORM, 0, float(k @ p), jaccard, float(min(1.0, p[k >= count].sum())))
    support = np.zeros((null.samples, n), dtype=np.int32)
    for stream, size in enumerate(sizes):
        support += _masks(draws(graph, level, size, null, stream), n)
    counts = (support >= min_support).sum(axis=1)
    expected = n * _support_tail([s / n for s in sizes], min_support) if uniform else float(counts.mean())
    return Chance(NullModel.UNIFORM if uniform else null.model, null.samples, expected, None,
                  _sampled_p(counts >= count))


def intersection_pmf(n: int, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The support ``k`` and probabilities of the number of items every one of independent uniform random sets
    of ``sizes`` out of ``n`` holds: each further set meets the running intersection hypergeometrically."""
    k = np.arange(max(sizes) + 1)
    dist = np.zeros(len(k))
    dist[sizes[0]] = 1.0
    for size in sizes[1:]:
        nxt = np.zeros(len(k))
        for held in np.flatnonzero(dist > 1e-300):
            ks, ps = shared_pmf(n, int(held), size)
            nxt[ks] += dist[held] * ps
        dist = nxt
    return k, dist


def _support_tail(probabilities: list[float], k: int) -> float:
    """P(at least ``k`` successes) of independent trials with these probabilities (Poisson-binomial)."""
    dist = np.array([1.0])
    for q in probabilities:
        dist = np.concatenate([dist * (1 - q), [0.0]]) + np.concatenate([[0.0], dist * q])
    return float(dist[k:].sum())


def _sampled_p(at_least: np.ndarray) -> float:
    return float((1 + at_least.sum()) / (1 + len(at_least)))
