"""ACDC (Conmy et al. 2023) on the fast engine, equal to its plain sequential algorithm.

The algorithm: start from every edge kept. Visit the destinations (each head's q, k and v input, each MLP
input, the logits) in reverse topological order, from the logits back (the graph's slot order, reversed). A
destination whose node has no kept outgoing edge cannot reach the logits: its incoming edges go without a
trial. Otherwise try each incoming edge that is kept, its sources from the latest back: ablate it on top of
the current circuit and remove it for good when the loss grows by less than ``tau``. The loss is the KL
divergence of the circuit's next-token distribution from the full model's (the default), or the drop of the
task metric from the full model's value (``full - metric``).

Batching: the trials of one destination are relative to one circuit until one is accepted, so they are
evaluated together, a window of them a pass (batched masks); the first accepted trial of a window is exactly
the sequential algorithm's next removal, and the trials after it are evaluated again on the new circuit. The
window doubles after a window without removal and halves after a removal (most trials are removals at
thresholds that keep few edges, where speculation would be wasted). Masks are memoised, so runs at several
thresholds share every evaluation until their decisions part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from circat.workers.engine.evaluate import EdgeEvaluator, masks_per_run
from circat.workers.tasks import Metric

DEFAULT_TAU = 0.01
"""ACDC's threshold where none is given"""

@dataclass(frozen=True)
class AcdcResult:
    """The edges ACDC kept at one threshold (before pruning), each tried edge's loss increase, and the work."""

    tau: float
    keep: np.ndarray
    harm: np.ndarray
    """per edge, the loss increase when it was tried (NaN where never tried)"""
    loss: float
    tried: int
    masks: int
    """masked forwards this threshold's run asked for (before memoisation)"""
    passes: int


def loss_of(evaluator: EdgeEvaluator) -> Callable[[np.ndarray], np.ndarray]:
    """The search loss of edge masks: KL to the full model, or the task metric's drop from the full model's."""
    if evaluator.engine.metric is Metric.KL:
        return evaluator.metrics
    full = evaluator.baselines.full
    return lambda masks: full - evaluator.metrics(masks)


def acdc(evaluator: EdgeEvaluator, tau: float, tick: Callable[[int], None] = lambda _: None) -> AcdcResult:
    """One ACDC run at threshold ``tau`` (``tick`` gets the number of edges tried so far)."""
    if not tau >= 0:
        raise ValueError(f"ACDC's threshold tau must be >= 0, got {tau}")
    graph = evaluator.engine.layout.graph
    loss = loss_of(evaluator)
    keep = np.ones(graph.n_edges, dtype=bool)
    harm = np.full(graph.n_edges, np.nan)
    current = float(loss(keep[None])[0])
    tried = masks = passes = 0
    widest = masks_per_run(evaluator.engine)
    window = 1
    for slot in range(len(graph.dests) - 1, -1, -1):
        start, stop = int(graph.slot_start[slot]), int(graph.slot_start[slot + 1])
        node = int(graph.edge_dst[start])
        if node != graph.n_nodes - 1 and not keep[graph.edge_src == node].any():
            keep[start:stop] = False
            continue
        candidates = list(range(stop - 1, start - 1, -1))
        while candidates:
            batch = candidates[:window]
            trials = np.repeat(keep[None], len(batch), axis=0)
            trials[np.arange(len(batch)), batch] = False
            losses = loss(trials)
            masks, passes = masks + len(batch), passes + 1
            accepted = np.flatnonzero(losses - current < tau)
            decided = len(batch) if not accepted.size else int(accepted[0]) + 1
            harm[batch[:decided]] = losses[:decided] - current
            tried += decided
            if accepted.size:
                keep[batch[decided - 1]] = False
                current = float(losses[decided - 1])
                window = max(1, window // 2)
            else:
                window = min(2 * window, widest)
            candidates = candidates[decided:]
            tick(tried)
    return AcdcResult(tau, keep, harm, current, tried, masks, passes)
