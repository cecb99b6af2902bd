"""The peer for EAP: TransformerLens's own edge attribution patching on the same bridge.

``transformer_lens.tools.analysis.attribution_patching.attribution_patch`` with edge
granularity scores ``(a_clean - a_corrupt) . d metric / d(reader input)`` with the gradient
taken on the *corrupted* run, per prompt pair and per position. Its per-position edges are
summed into MIB edges here, so its |score| can be compared with the project's EAP, which
linearises at the *clean* run: the two agree in rank only as far as the metric is linear.
The peer differentiates through the weights' graph, so the bridge's parameters are switched to
``requires_grad`` for its run (the project's engine keeps them frozen) and back afterwards.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from transformer_lens.tools.analysis.attribution_patching import (
    AttributionResult,
    EdgeAttributionConfig,
    Node,
    attribution_patch,
)

from circat.service.graph import ModelGraph
from circat.workers.metrics import final_logits, task_metric
from circat.workers.models import LoadedModel
from circat.workers.tasks import Metric
from circat.workers.tasks.encode import TaskBatch


def peer_scores(model: LoadedModel, batch: TaskBatch, metric: Metric, graph: ModelGraph) -> np.ndarray:
    """The peer's edge scores summed over positions and prompt pairs, in the graph's edge order."""
    totals: dict[str, float] = defaultdict(float)
    config = EdgeAttributionConfig(granularity="edge")
    model.bridge.requires_grad_(True)
    try:
        _accumulate(model, batch, metric, config, totals)
    finally:
        model.bridge.requires_grad_(False)
    out = np.zeros(graph.n_edges)
    for name, score in totals.items():
        out[graph.edge_id(name)] = score
    return out


def _accumulate(model: LoadedModel, batch: TaskBatch, metric: Metric, config: EdgeAttributionConfig,
                totals: dict[str, float]) -> None:
    for i in range(len(batch)):
        one = batch[i:i + 1]
        length = int(one.lengths[0])

        def metric_fn(logits: torch.Tensor, one: TaskBatch = one) -> torch.Tensor:
            return task_metric(metric, final_logits(logits, one.lengths), one).sum()

        result: AttributionResult = attribution_patch(model.bridge, one.clean[:, :length], one.corrupted[:, :length],
                                                      metric_fn, config)
        for (src, dst), score in result.edge_scores.items():
            totals[_edge_name(src, dst)] += score


def _edge_name(src: Node, dst: Node) -> str:
    return f"{_writer(src)}->{_reader(dst)}"


def _writer(node: Node) -> str:
    if node.kind == "embed":
        return "input"
    return f"a{node.layer}.h{node.head}" if node.kind == "attn_head_out" else f"m{node.layer}"


def _reader(node: Node) -> str:
    if node.kind == "logits":
        return "logits"
    if node.kind == "mlp_in":
        return f"m{node.layer}"
    return f"a{node.layer}.h{node.head}<{node.kind[0]}>"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (ties get their average rank)."""
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]
