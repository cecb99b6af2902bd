"""The discovery methods end to end: scores, circuits with provenance, and their evaluation.

``discover`` runs node ablation backward search, EAP or EAP-IG on one batch and returns the
catalogue's circuits: node circuits at each performance level (ablation), or edge circuits
at each target faithfulness (or the top-n edges), pruned to input->logits paths, each with its
faithfulness in the provenance, and in ``annotations["evaluation"]`` the metric of the full model
and of the empty circuit and, for edge methods, both faithfulness curves (signed and absolute
ranking); CPR and CMD also sit in the params.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from service.circuit import Circuit, Provenance
from service.tasks import family_of
from service.types import Ablation, Method
from workers.engine.attribution import edge_attribution
from workers.engine.evaluate import Baselines, Curve, EdgeEvaluator, faithfulness_curve
from workers.engine.node_search import DEFAULT_LEVELS, check_levels, node_search
from workers.engine.patching import PatchingEngine
from workers.engine.select import importance, prune, smallest_sizes, top_n
from workers.models import LoadedModel
from workers.tasks import Metric
from workers.tasks.encode import TaskBatch


@dataclass(frozen=True)
class RunSpec:
    """What to discover and how."""

    model: str
    task: str
    method: Method
    ablation: Ablation = Ablation.RESAMPLE
    metric: Metric = Metric.LOGIT_DIFF
    levels: tuple[float, ...] = DEFAULT_LEVELS
    per_position: bool = False
    ig_steps: int = 5
    orders: tuple[str, ...] = ("backward",)
    top_n: int | None = None
    absolute: bool = True
    n_prompts: int = 64
    seed: int = 0
    model_source: str | None = None
    """the local directory the weights were read from, kept as provenance only"""

    def params(self) -> dict[str, Any]:
        """The parameters recorded in each circuit's provenance."""
        out: dict[str, Any] = {"ablation": self.ablation.value, "per_position": self.per_position,
                               "n_prompts": self.n_prompts, "seed": self.seed}
        if self.model_source:
            out["model_source"] = self.model_source
        if self.method is Method.ABLATION:
            return out | {"orders": list(self.orders)}
        out |= {"absolute": self.absolute}
        return out | ({"ig_steps": self.ig_steps} if self.method is Method.EAP_IG else {})


@dataclass(frozen=True)
class DiscoveryRun:
    """Scores and circuits of one run."""

    spec: RunSpec
    baselines: Baselines
    circuits: list[Circuit]


def _provenance(spec: RunSpec, faithfulness: float, extra: dict[str, Any]) -> Provenance:
    return Provenance(model=spec.model, task=spec.task, method=spec.method.value, task_family=family_of(spec.task),
                      params=spec.params() | extra, metric=spec.metric.value, faithfulness=faithfulness)


def discover(model: LoadedModel, batch: TaskBatch, spec: RunSpec,
             tick: Callable[[], None] = lambda: None) -> DiscoveryRun:
    """Run ``spec.method`` on ``batch`` and return its circuits."""
    engine = PatchingEngine(model, batch, spec.ablation, spec.metric, spec.per_position)
    if spec.method is Method.ABLATION:
        return _ablation(engine, spec, tick)
    return _edges(engine, spec, tick)


def _ablation(engine: PatchingEngine, spec: RunSpec, tick: Callable[[], None]) -> DiscoveryRun:
    result = node_search(engine, spec.levels, spec.orders, tick=tick)
    graph = engine.layout.graph
    circuits = []
    for i, level in enumerate(result.levels):
        keep = result.keep[0, i] | ~graph.component_mask
        extra = {"level": level, "forward_passes": result.forward_passes}
        by_order = dict(zip(result.orders, result.faithfulness[:, i].tolist(), strict=True))
        evaluation = {"full_metric": result.baselines.full, "empty_metric": result.baselines.empty,
                      "faithfulness_by_order": by_order}
        circuits.append(Circuit(_provenance(spec, float(result.faithfulness[0, i]), extra), engine.model.shape,
                                node_mask=keep, node_scores=result.survival[i].astype(np.float64),
                                annotations={"evaluation": evaluation}))
    return DiscoveryRun(spec, result.baselines, circuits)


def _edges(engine: PatchingEngine, spec: RunSpec, tick: Callable[[], None]) -> DiscoveryRun:
    steps = spec.ig_steps if spec.method is Method.EAP_IG else 1
    scores = edge_attribution(engine, steps).numpy()
    tick()
    evaluator = EdgeEvaluator(engine)
    baselines = evaluator.baselines
    curves = {"signed": faithfulness_curve(evaluator, importance(scores, spec.metric, absolute=False)),
              "absolute": faithfulness_curve(evaluator, importance(scores, spec.metric, absolute=True))}
    tick()
    rank = importance(scores, spec.metric, spec.absolute)
    summary = {"cpr": curves["signed"].cpr, "cmd": curves["absolute"].cmd}
    evaluation = {"full_metric": baselines.full, "empty_metric": baselines.empty,
                  **{f"curve_{k}": asdict(c) for k, c in curves.items()}}
    picks = _pick(evaluator, rank, curves["absolute" if spec.absolute else "signed"], spec)
    tick()
    evaluation["masks_evaluated"] = evaluator.evaluations
    circuits = [_edge_circuit(engine, spec, scores, mask, f, extra | summary, evaluation) for mask, f, extra in picks]
    return DiscoveryRun(spec, baselines, circuits)


def _pick(evaluator: EdgeEvaluator, rank: np.ndarray, curve: Curve,
          spec: RunSpec) -> list[tuple[np.ndarray, float, dict[str, Any]]]:
    """Edge masks: the top-n, or the smallest pruned top-k meeting each target faithfulness
    (by bisection on the ranking, starting from the curve's sizes of the same ranking)."""
    graph = evaluator.engine.layout.graph

    def mask_of(k: int) -> np.ndarray:
        return prune(graph, top_n(rank, k))

    if spec.top_n is not None:
        mask = mask_of(spec.top_n)
        return [(mask, float(evaluator.faithfulness(mask[None])[0]), {"top_n": spec.top_n})]
    known = {round(graph.n_edges * p / 100): f for p, f in zip(curve.percents, curve.faithfulness, strict=True)}
    found = smallest_sizes(lambda sizes: evaluator.faithfulness(np.stack([mask_of(k) for k in sizes])),
                           graph.n_edges, spec.levels, known)
    return [(mask_of(k), f, {"level": level, "top_n": k}) for level, (k, f) in zip(spec.levels, found, strict=True)]


def _edge_circuit(engine: PatchingEngine, spec: RunSpec, scores: np.ndarray, mask: np.ndarray,
                  faithfulness: float, extra: dict[str, Any], evaluation: dict[str, Any]) -> Circuit:
    graph = engine.layout.graph
    nodes = graph.endpoint_mask(mask)
    return Circuit(_provenance(spec, faithfulness, extra), engine.model.shape, node_mask=nodes,
                   node_scores=np.full(graph.n_nodes, np.nan), edge_mask=mask, edge_scores=scores.astype(np.float64),
                   annotations={"evaluation": evaluation})


def levels_of(values: Sequence[float] | None) -> tuple[float, ...]:
    """Performance levels from the CLI, checked and sorted (default 70/80/90/97 %)."""
    return tuple(sorted(check_levels(values))) if values else DEFAULT_LEVELS
