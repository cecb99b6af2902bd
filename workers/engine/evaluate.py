"""Faithfulness of circuits, the faithfulness curve over edge budgets, CPR and CMD (as MIB).

f(C) = (m(C) - m(empty)) / (m(N) - m(empty)). Edge circuits: ``empty`` ablates every edge.
Node circuits: ``empty`` ablates every head and MLP (``input`` and ``logits`` are in every
circuit). The curve evaluates the top k % of edges, pruned, for k in ``CURVE_PERCENTS``; CPR
is the area under it and CMD the area of |1 - f| (trapezoid rule over the fraction of edges).
An ``EdgeEvaluator`` remembers every mask it has evaluated, so the curves, the baselines and
the search for each level's circuit never pay twice for one mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from circat.workers.engine.patching import PatchingEngine
from circat.workers.engine.select import prune, top_n

CURVE_PERCENTS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
MASK_BUDGET_BYTES = 2**30


@dataclass(frozen=True)
class Baselines:
    """The metric of the full model and of the empty circuit."""

    full: float
    empty: float

    def faithfulness(self, value: torch.Tensor | float) -> torch.Tensor | float:
        span = self.full - self.empty
        if span == 0:
            raise ValueError("the full model and the empty circuit score the same: faithfulness is undefined")
        return (value - self.empty) / span


@dataclass(frozen=True)
class Curve:
    """Faithfulness at each edge budget, with its areas."""

    percents: tuple[float, ...]
    edges: tuple[int, ...]
    faithfulness: tuple[float, ...]
    cpr: float
    cmd: float


def masks_per_run(engine: PatchingEngine) -> int:
    """How many edge masks fit one batched forward within the memory budget."""
    b, p = engine.batch.clean.shape
    per_mask = b * p * engine.n_sources * engine.model.shape.d_model * engine.model.dtype.itemsize * 3
    return max(1, budget(engine.model.device) // per_mask)


def budget(device: torch.device) -> int:
    """Bytes the masked runs may take: ``MASK_BUDGET_BYTES``, or a quarter of a GPU's free memory."""
    if device.type != "cuda":
        return MASK_BUDGET_BYTES
    free, _ = torch.cuda.mem_get_info(device)
    return max(MASK_BUDGET_BYTES, free // 4)


def batched_metrics(evaluate: Callable[[torch.Tensor], torch.Tensor], masks: np.ndarray, chunk: int) -> np.ndarray:
    """``evaluate`` (an engine's metric of a batch of masks) over every row of ``masks``, ``chunk`` masks a run."""
    out = [evaluate(torch.as_tensor(masks[start:start + chunk], dtype=torch.float32)).cpu()
           for start in range(0, len(masks), chunk)]
    return torch.cat(out).double().numpy()


def edge_metrics(engine: PatchingEngine, masks: np.ndarray, per_prompt: bool = False) -> np.ndarray:
    """The metric of every edge mask (rows of ``masks``), or ``[mask, prompt]``, batched within the memory budget."""
    return batched_metrics(lambda keep: engine.evaluate_edges(keep, per_prompt), masks, masks_per_run(engine))


def prompt_means(per_prompt: np.ndarray) -> np.ndarray:
    """Each row's mean over prompts as the engine takes the metric (a float32 mean of the float32 values), so a
    number from per-prompt values equals the one the engine gives without them."""
    return np.array([float(torch.from_numpy(row.astype(np.float32)).mean()) for row in per_prompt])


@dataclass
class EdgeEvaluator:
    """Edge-mask metrics of one engine, each distinct mask evaluated once; with ``per_prompt``, each mask's
    per-prompt values are kept too (``prompt_values``), from the same passes."""

    engine: PatchingEngine
    per_prompt: bool = False
    evaluations: int = 0
    _memo: dict[bytes, float] = field(default_factory=dict)
    _prompts: dict[bytes, np.ndarray] = field(default_factory=dict)

    def metrics(self, masks: np.ndarray) -> np.ndarray:
        """The metric of every row of ``masks``; only masks not seen before run."""
        keys = [np.packbits(m).tobytes() for m in masks]
        fresh = list(dict.fromkeys(k for k in keys if k not in self._memo))
        if fresh:
            rows = np.stack([masks[keys.index(k)] for k in fresh])
            if self.per_prompt:
                values = edge_metrics(self.engine, rows, per_prompt=True)
                self._prompts.update(zip(fresh, values, strict=True))
                means = prompt_means(values)
            else:
                means = edge_metrics(self.engine, rows)
            self._memo.update((k, float(v)) for k, v in zip(fresh, means, strict=True))
            self.evaluations += len(fresh)
        return np.array([self._memo[k] for k in keys])

    def prompt_values(self, masks: np.ndarray) -> np.ndarray:
        """Per-prompt metrics ``[mask, prompt]`` of masks already evaluated by an evaluator made ``per_prompt``."""
        return np.stack([self._prompts[np.packbits(m).tobytes()] for m in masks])

    @cached_property
    def baselines(self) -> Baselines:
        """The metric of the full model and of the empty edge circuit (computed once)."""
        n = self.engine.layout.graph.n_edges
        values = self.metrics(np.stack([np.ones(n, bool), np.zeros(n, bool)]))
        return Baselines(float(values[0]), float(values[1]))

    def faithfulness(self, masks: np.ndarray) -> np.ndarray:
        """Faithfulness of every row of ``masks``."""
        return np.asarray(self.baselines.faithfulness(self.metrics(masks)), dtype=np.float64)


def edge_baselines(engine: PatchingEngine) -> Baselines:
    """The metric of the full model and of the empty edge circuit."""
    return EdgeEvaluator(engine).baselines


def node_baseline_masks(engine: PatchingEngine) -> np.ndarray:
    """The node masks of the full model and of the empty circuit (``input`` and ``logits`` kept)."""
    graph = engine.layout.graph
    return np.stack([np.ones(graph.n_nodes, bool), ~graph.component_mask])


def node_metrics(engine: PatchingEngine, masks: np.ndarray) -> np.ndarray:
    """The per-prompt metric ``[mask, prompt]`` of node masks, in one pass."""
    return engine.evaluate_nodes(torch.as_tensor(masks, dtype=torch.float32), per_prompt=True).double().cpu().numpy()


def node_baselines(engine: PatchingEngine) -> Baselines:
    values = prompt_means(node_metrics(engine, node_baseline_masks(engine)))
    return Baselines(float(values[0]), float(values[1]))


def curve_masks(engine: PatchingEngine, importance_: np.ndarray,
                percents: tuple[float, ...] = CURVE_PERCENTS) -> np.ndarray:
    """Pruned top-k% edge masks, one row per percent."""
    graph = engine.layout.graph
    return np.stack([prune(graph, top_n(importance_, round(graph.n_edges * p / 100))) for p in percents])


def faithfulness_curve(evaluator: EdgeEvaluator, importance_: np.ndarray,
                       percents: tuple[float, ...] = CURVE_PERCENTS) -> Curve:
    """Faithfulness of the top k% of edges for each k, with CPR and CMD."""
    masks = curve_masks(evaluator.engine, importance_, percents)
    f = evaluator.faithfulness(masks)
    x = np.asarray(percents) / 100
    return Curve(tuple(percents), tuple(int(m.sum()) for m in masks), tuple(float(v) for v in f),
                 float(np.trapezoid(f, x)), float(np.trapezoid(np.abs(1 - f), x)))
