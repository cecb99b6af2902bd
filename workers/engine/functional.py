"""Functional evaluation of selections (circuits, expressions): keep them, or knock them out of the full model.

``keep``:     (m(C) - m(empty)) / (m(N) - m(empty)), everything outside C ablated: discovery's faithfulness.
``knockout``: (m(N without C) - m(empty)) / (m(N) - m(empty)): the share of the behaviour left without C.

At node level the components (heads and MLPs) are ablated and ``empty`` ablates every component (the
embeddings and the logits stay); at edge level edges are ablated and ``empty`` ablates every edge, as
discovery measures each kind of circuit. All node-level selections of one call run as one batch of masks
with both baselines; edge-level ones go through the ``EdgeEvaluator`` (each distinct mask once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from service.expressions import Selection
from service.types import Level, Mode
from workers.engine.evaluate import Baselines, EdgeEvaluator, masks_per_run
from workers.engine.patching import PatchingEngine


@dataclass(frozen=True)
class FunctionalResult:
    """One selection evaluated on one task: the number and the metric values behind it."""

    selection: Selection
    mode: Mode
    value: float
    metric: float
    """the metric of the run: the circuit alone (keep) or the model without it (knockout)"""
    full: float
    empty: float


def keep_mask(selection: Selection, mode: Mode, component_mask: np.ndarray) -> np.ndarray:
    """The mask a run keeps (1) for a selection and mode: nodes at node level, edges at edge level."""
    if selection.level is Level.EDGE:
        assert selection.edge_mask is not None
        return selection.edge_mask if mode is Mode.KEEP else ~selection.edge_mask
    chosen = selection.node_mask & component_mask
    return (chosen if mode is Mode.KEEP else ~chosen & component_mask) | ~component_mask


def node_metrics(engine: PatchingEngine, masks: np.ndarray) -> np.ndarray:
    """The metric of every node mask (rows), batched within the engine's memory budget."""
    out = []
    chunk = masks_per_run(engine)
    for start in range(0, len(masks), chunk):
        keep = torch.as_tensor(masks[start:start + chunk], dtype=torch.float32)
        out.append(engine.evaluate_nodes(keep).cpu())
    return torch.cat(out).double().numpy()


def evaluate_selections(engine: PatchingEngine, selections: Sequence[Selection],
                        mode: Mode = Mode.KEEP) -> list[FunctionalResult]:
    """Every selection evaluated in ``mode`` on the engine's prompts: node ones in one batch, edge ones memoised."""
    graph = engine.layout.graph
    components = graph.component_mask
    out: dict[int, FunctionalResult] = {}
    nodes = [i for i, s in enumerate(selections) if s.level is Level.NODE]
    if nodes:
        masks = np.stack([np.ones(graph.n_nodes, bool), ~components,
                          *(keep_mask(selections[i], mode, components) for i in nodes)])
        values = node_metrics(engine, masks)
        base = Baselines(float(values[0]), float(values[1]))
        for i, v in zip(nodes, values[2:], strict=True):
            out[i] = _result(selections[i], mode, float(v), base)
    edges = [i for i, s in enumerate(selections) if s.level is Level.EDGE]
    if edges:
        evaluator = EdgeEvaluator(engine)
        values = evaluator.metrics(np.stack([keep_mask(selections[i], mode, components) for i in edges]))
        for i, v in zip(edges, values, strict=True):
            out[i] = _result(selections[i], mode, float(v), evaluator.baselines)
    return [out[i] for i in range(len(selections))]


def _result(selection: Selection, mode: Mode, metric: float, base: Baselines) -> FunctionalResult:
    return FunctionalResult(selection, mode, float(base.faithfulness(metric)), metric, base.full, base.empty)
