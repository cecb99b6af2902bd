"""Node ablation backward search (Lan, Torr, Barez): drop components while performance holds.

Walk the components from the last layer to the first (each layer's MLP, then its heads from
the last), ablate one at a time on top of those already removed, and keep it removed when the
circuit's faithfulness stays at or above the level. Sweeps repeat until one removes nothing.
All performance levels advance in lockstep, one batched forward per component tried, in which
levels whose circuits still agree share one mask. Other
orders: ``forward`` and ``random:SEED``; with several orders, each component's survival
frequency across orders is reported per level.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from circat.workers.engine.evaluate import Baselines, node_baseline_masks, node_metrics, prompt_means
from circat.workers.engine.layout import Layout
from circat.workers.engine.patching import PatchingEngine

DEFAULT_LEVELS = (0.7, 0.8, 0.9, 0.97)


@dataclass(frozen=True)
class NodeSearchResult:
    """Kept components per level (rows) and order, survival frequency, and faithfulness."""

    levels: tuple[float, ...]
    orders: tuple[str, ...]
    keep: np.ndarray
    faithfulness: np.ndarray
    baselines: Baselines
    forward_passes: int
    prompt_values: np.ndarray
    """``[order, level, prompt]``: each circuit's metric per prompt (from the pass that measured it)"""
    baseline_values: np.ndarray
    """``[2, prompt]``: the full model's and the empty circuit's metric per prompt"""

    @property
    def survival(self) -> np.ndarray:
        """``[level, node]``: fraction of orders in which each node survives."""
        return self.keep.mean(axis=0)


def check_levels(levels: Sequence[float]) -> Sequence[float]:
    """``levels`` when every one lies in (0, 1]; else a ``ValueError`` naming them."""
    if not levels or not all(0 < lv <= 1 for lv in levels):
        raise ValueError(f"performance levels must lie in (0, 1], got {list(levels)}")
    return levels


def component_order(layout: Layout, order: str) -> list[int]:
    """Node indices of every head and MLP in the requested sweep order."""
    backward: list[int] = []
    for slots in reversed(layout.layers):
        backward.append(slots.mlp_node)
        backward.extend(reversed(slots.head_nodes))
    if order == "backward":
        return backward
    if order == "forward":
        return backward[::-1]
    if order.startswith("random:"):
        out = list(backward)
        random.Random(int(order.split(":", 1)[1])).shuffle(out)
        return out
    raise ValueError(f"unknown sweep order {order!r}: use backward, forward or random:SEED")


def sweep(engine: PatchingEngine, order: list[int], keep: torch.Tensor, levels: torch.Tensor,
          baselines: Baselines, tick: Callable[[], None]) -> bool:
    """One pass over ``order`` (``keep`` is ``[level, node]``, updated in place); whether any level removed one."""
    removed = False
    for node in order:
        active = keep[:, node].nonzero().flatten()
        if active.numel() == 0:
            tick()
            continue
        trial = keep[active].clone()
        trial[:, node] = 0
        distinct, which = trial.unique(dim=0, return_inverse=True)  # levels that agree so far share a run
        f = baselines.faithfulness(engine.evaluate_nodes(distinct).double().cpu())[which]
        ok = f >= levels[active]
        keep[active[ok], node] = 0
        removed |= bool(ok.any())
        tick()
    return removed


def node_search(engine: PatchingEngine, levels: Sequence[float] = DEFAULT_LEVELS,
                orders: Sequence[str] = ("backward",), max_sweeps: int = 5,
                tick: Callable[[], None] = lambda: None) -> NodeSearchResult:
    """Run the search for every order; circuits at every level. ``tick`` fires per component tried."""
    check_levels(levels)
    if max_sweeps < 1:
        raise ValueError(f"max_sweeps must be at least 1, got {max_sweeps}")
    baseline_values = node_metrics(engine, node_baseline_masks(engine))
    means = prompt_means(baseline_values)
    baselines = Baselines(float(means[0]), float(means[1]))
    n = engine.layout.graph.n_nodes
    target = torch.tensor(levels, dtype=torch.float64)
    keeps, faith, values, passes = [], [], [], 2
    for order in orders:
        seq = component_order(engine.layout, order)
        keep = torch.ones((len(levels), n))
        for _ in range(max_sweeps):
            passes += len(seq)
            if not sweep(engine, seq, keep, target, baselines, tick):
                break
        values.append(node_metrics(engine, keep.bool().numpy()))
        faith.append(np.asarray(baselines.faithfulness(prompt_means(values[-1])), dtype=np.float64))
        passes += 1
        keeps.append(keep.bool().numpy())
    return NodeSearchResult(tuple(levels), tuple(orders), np.stack(keeps), np.stack(faith), baselines, passes,
                            np.stack(values), baseline_values)
