"""The discovery methods end to end: scores, circuits with provenance, and their evaluation.

``discover`` runs one registered method (``METHODS``) on one batch and returns the catalogue's
circuits: node circuits at each performance level (ablation); edge circuits at each target
faithfulness, or the top-n edges (EAP, EAP-IG); the circuit a path method builds (path patching,
IPE). Edge circuits are pruned to input->logits paths; each carries its faithfulness in the
provenance, and in ``annotations["evaluation"]`` the metric of the full model and of the empty
circuit and both faithfulness curves (signed and absolute ranking of its edge scores); CPR and CMD
also sit in the params. Path methods add what they found in ``annotations`` (rounds, paths).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from circat.service.bootstrap import DEFAULT_BOOTSTRAP, faithfulness_interval
from circat.service.circuit import Circuit, Provenance
from circat.service.config import checkpoint_dir
from circat.service.jobs.spec import PathSearch
from circat.service.progress import Progress, silent
from circat.service.tasks import family_of
from circat.service.types import Ablation, Gradient, IgPoints, Method
from circat.workers.engine.acdc import DEFAULT_TAU, acdc
from circat.workers.engine.attribution import edge_attribution
from circat.workers.engine.edge_pruning import PruningConfig, train_gates, warm_start
from circat.workers.engine.evaluate import Baselines, Curve, EdgeEvaluator, faithfulness_curve
from circat.workers.engine.gim import GimConfig
from circat.workers.engine.ipe import PathScorer, path_circuit, search_paths
from circat.workers.engine.node_search import DEFAULT_LEVELS, check_levels, node_search
from circat.workers.engine.patching import PatchingEngine
from circat.workers.engine.path_patching import path_patching
from circat.workers.engine.select import importance, prune, smallest_sizes, top_n
from circat.workers.models import LoadedModel
from circat.workers.tasks import Metric
from circat.workers.tasks.encode import TaskBatch

IG_STEPS = {Method.EAP_IG: 5, Method.IPE_APPROX: 2}
"""gradient points where none are given: EAP-IG's interpolation steps; ipe-approx's derivative points
(2, the clean input and halfway, agreed best with exact IPE per evaluation on the toy model)"""


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
    ig_steps: int | None = None
    """points each gradient is averaged over (``gradient_points``); None: the method's default"""
    ig_points: IgPoints = IgPoints.MIB
    """eap-ig: where those points lie (``IgPoints``)"""
    orders: tuple[str, ...] = ("backward",)
    top_n: int | None = None
    absolute: bool = True
    n_prompts: int = 64
    seed: int = 0
    model_source: str | None = None
    """the local directory the weights were read from, kept as provenance only"""
    paths: PathSearch = field(default_factory=PathSearch)
    taus: tuple[float, ...] = (DEFAULT_TAU,)
    """acdc: its thresholds, one circuit each"""
    acdc_metric: Metric = Metric.KL
    """acdc: the loss its trials are judged by (KL to the full model, or the task metric's drop)"""
    pruning: PruningConfig = field(default_factory=PruningConfig)
    """edge-pruning: how the gates are trained"""
    gradient: Gradient = Gradient.PLAIN
    """eap, eap-ig: plain gradients or GIM's"""

    @property
    def gradient_points(self) -> int:
        """Points each gradient is averaged over: ``ig_steps``, else the method's default; 1 where unused."""
        return (self.ig_steps or IG_STEPS[self.method]) if self.method in IG_STEPS else 1

    def params(self) -> dict[str, Any]:
        """The parameters recorded in each circuit's provenance."""
        out: dict[str, Any] = {"ablation": self.ablation.value, "per_position": self.per_position,
                               "n_prompts": self.n_prompts, "seed": self.seed}
        if self.model_source:
            out["model_source"] = self.model_source
        if self.method is Method.ABLATION:
            return out | {"orders": list(self.orders)}
        if self.method is Method.ACDC:
            return out | {"acdc_metric": self.acdc_metric.value}
        if self.method is Method.EDGE_PRUNING:
            p = self.pruning
            return out | {"steps": p.steps, "lr": p.lr, "gate": p.gate.value, "target": p.target,
                          "sparsity_weight": p.sparsity_weight, "warm_start": p.warm_start, "absolute": True}
        if self.method.searches_paths:
            return out | self._path_params()
        out |= {"absolute": self.absolute}
        if self.gradient is Gradient.GIM:
            out |= {"gradient": Gradient.GIM.value, **GimConfig().params()}
        ig = {"ig_steps": self.gradient_points, "ig_points": self.ig_points.value}
        return out | (ig if self.method is Method.EAP_IG else {})

    def _path_params(self) -> dict[str, Any]:
        p = self.paths
        out: dict[str, Any] = {"min_effect": p.min_effect, "relative": p.relative}
        if self.method is Method.PATH_PATCHING:
            return out | {"receivers": list(p.receivers)}
        out |= {"search": p.search.value, "width": p.width, "max_paths": p.max_paths, "time_budget_s": p.time_budget_s}
        approx = {"recheck": p.recheck, "optimism": p.optimism, "ig_steps": self.gradient_points}
        return out | (approx if self.method is Method.IPE_APPROX else {})


@dataclass(frozen=True)
class DiscoveryRun:
    """Scores and circuits of one run."""

    spec: RunSpec
    baselines: Baselines
    circuits: list[Circuit]


def _provenance(spec: RunSpec, faithfulness: float, extra: dict[str, Any]) -> Provenance:
    return Provenance(model=spec.model, task=spec.task, method=spec.method.value, task_family=family_of(spec.task),
                      params=spec.params() | extra, metric=spec.metric.value, faithfulness=faithfulness)


def discover(model: LoadedModel, batch: TaskBatch, spec: RunSpec, progress: Progress = silent) -> DiscoveryRun:
    """Run ``spec.method`` on ``batch`` and return its circuits."""
    engine = PatchingEngine(model, batch, spec.ablation, spec.metric, spec.per_position)
    return METHODS[spec.method](engine, spec, progress)


def _ablation(engine: PatchingEngine, spec: RunSpec, progress: Progress) -> DiscoveryRun:
    tried = itertools.count(1)
    result = node_search(engine, spec.levels, spec.orders, tick=lambda: progress(next(tried), None, "sweep"))
    graph = engine.layout.graph
    circuits = []
    for i, level in enumerate(result.levels):
        keep = result.keep[0, i] | ~graph.component_mask
        extra = {"level": level, "forward_passes": result.forward_passes}
        by_order = dict(zip(result.orders, result.faithfulness[:, i].tolist(), strict=True))
        evaluation = {"full_metric": result.baselines.full, "empty_metric": result.baselines.empty,
                      "faithfulness_by_order": by_order,
                      **_interval(result.prompt_values[0, i], *result.baseline_values)}
        circuits.append(Circuit(_provenance(spec, float(result.faithfulness[0, i]), extra), engine.model.shape,
                                node_mask=keep, node_scores=result.survival[i].astype(np.float64),
                                annotations={"evaluation": evaluation}))
    return DiscoveryRun(spec, result.baselines, circuits)


def _edges(engine: PatchingEngine, spec: RunSpec, progress: Progress) -> DiscoveryRun:
    progress(0, 3, "scoring")
    points = spec.ig_points if spec.method is Method.EAP_IG else IgPoints.CLEAN
    gim = GimConfig() if spec.gradient is Gradient.GIM else None
    scores = edge_attribution(engine, spec.gradient_points, points, gim).numpy()
    return _ranked(EdgeEvaluator(engine, per_prompt=True), scores, spec, progress)


def _edge_pruning(engine: PatchingEngine, spec: RunSpec, progress: Progress) -> DiscoveryRun:
    """Train the gates (resuming from a checkpoint of the same run), then choose circuits from their ranking."""
    evaluator = EdgeEvaluator(engine, per_prompt=True)
    config = spec.pruning
    n = engine.layout.graph.n_edges
    progress(0, config.steps, "warm start" if config.warm_start else "training")
    init = (warm_start(edge_attribution(engine, IG_STEPS[Method.EAP_IG], IgPoints.MIB).numpy()) if config.warm_start
            else torch.full((n,), 3.0))
    checkpoint = checkpoint_dir() / f"edge-pruning-{_run_key(spec)}.pt"
    base = evaluator.baselines
    learned = train_gates(engine, config, init, base.full, base.empty, checkpoint, lambda step, loss, sparsity:
                          progress(step, config.steps, f"step {step}: loss {loss:.4g}, sparsity {sparsity:.1%}"))
    run = _ranked(evaluator, engine.metric.harm_sign * learned.gates, spec, silent)  # the metric's sign convention
    training = {"training": {"history": [list(h) for h in learned.history]}}
    checkpoint.unlink(missing_ok=True)
    return replace(run, circuits=[replace(c, annotations=c.annotations | training) for c in run.circuits])


def _run_key(spec: RunSpec) -> str:
    """What identifies a run's checkpoint: the model, task and every parameter."""
    key = json.dumps([spec.model, spec.task, spec.method.value, spec.metric.value, spec.params(),
                      list(spec.levels)], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _ranked(evaluator: EdgeEvaluator, scores: np.ndarray, spec: RunSpec, progress: Progress) -> DiscoveryRun:
    """The circuits of a score vector: both curves, then the top-n or each level's smallest pruned top-k."""
    progress(1, 3, "faithfulness curves")
    curves, evaluation = _curves(evaluator, scores, spec)
    progress(2, 3, "circuits at each level")
    rank = importance(scores, spec.metric, spec.absolute)
    summary = {"cpr": curves["signed"].cpr, "cmd": curves["absolute"].cmd}
    picks = _pick(evaluator, rank, curves["absolute" if spec.absolute else "signed"], spec)
    progress(3, 3, "done")
    evaluation["masks_evaluated"] = evaluator.evaluations
    circuits = [_edge_circuit(evaluator, spec, scores, mask, f, extra | summary, evaluation)
                for mask, f, extra in picks]
    return DiscoveryRun(spec, evaluator.baselines, circuits)


def _curves(evaluator: EdgeEvaluator, scores: np.ndarray, spec: RunSpec) -> tuple[dict[str, Curve], dict[str, Any]]:
    """Both faithfulness curves of a score vector (unscored edges count as 0), and the evaluation record."""
    filled = np.nan_to_num(scores, nan=0.0)
    curves = {"signed": faithfulness_curve(evaluator, importance(filled, spec.metric, absolute=False)),
              "absolute": faithfulness_curve(evaluator, importance(filled, spec.metric, absolute=True))}
    base = evaluator.baselines
    return curves, {"full_metric": base.full, "empty_metric": base.empty,
                    **{f"curve_{k}": asdict(c) for k, c in curves.items()}}


def _path_patching(engine: PatchingEngine, spec: RunSpec, progress: Progress) -> DiscoveryRun:
    evaluator = EdgeEvaluator(engine, per_prompt=True)
    rounds = itertools.count(1)
    result = path_patching(evaluator, spec.paths, tick=lambda msg: progress(next(rounds), None, msg))
    span = evaluator.baselines.full - evaluator.baselines.empty
    extra = {"rounds": len(result.rounds), "masks_evaluated": evaluator.evaluations}
    found = {"rounds": [{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(r).items()}
                        for r in result.rounds]}
    return _found_circuit(evaluator, spec, result.edge_mask, -span * result.edge_scores, -span * result.node_scores,
                          extra, found)


def _ipe(engine: PatchingEngine, spec: RunSpec, progress: Progress) -> DiscoveryRun:
    evaluator = EdgeEvaluator(engine, per_prompt=True)
    scorer = PathScorer(engine, evaluator.baselines, spec.gradient_points)
    budget = spec.paths.max_paths
    result = search_paths(scorer, spec.paths, spec.method is Method.IPE_APPROX,
                          lambda found, msg: progress(min(found, budget), budget, msg))
    graph = engine.layout.graph
    mask, scores = path_circuit(graph, result.paths)
    counts = result.counts
    extra = {"paths": len(result.paths), "stopped": result.stopped, "forward_passes": counts.forward,
             "backward_passes": counts.backward, "partial_paths_expanded": counts.expanded}
    listed = [{"edges": p.names(graph), "contribution": p.contribution} for p in result.paths]
    found = {"paths": {"positive": [p for p in listed if p["contribution"] > 0],
                       "negative": [p for p in listed if p["contribution"] <= 0]}}
    span = evaluator.baselines.full - evaluator.baselines.empty
    return _found_circuit(evaluator, spec, mask, -span * scores, np.full(graph.n_nodes, np.nan), extra, found)


def _found_circuit(evaluator: EdgeEvaluator, spec: RunSpec, mask: np.ndarray, scores: np.ndarray,
                   node_scores: np.ndarray, extra: dict[str, Any], found: dict[str, Any]) -> DiscoveryRun:
    """The one circuit a path method built (pruned), with its faithfulness, curves, CPR and CMD.

    Scores are metric changes when the edge (node) is ablated along its paths, EAP's sign convention.
    """
    graph = evaluator.engine.layout.graph
    mask = prune(graph, mask)
    curves, evaluation = _curves(evaluator, scores, spec)
    f = float(evaluator.faithfulness(mask[None])[0])
    summary = {"cpr": curves["signed"].cpr, "cmd": curves["absolute"].cmd}
    circuit = _edge_circuit(evaluator, spec, scores, mask, f, extra | summary, evaluation)
    return DiscoveryRun(spec, evaluator.baselines, [replace(circuit, node_scores=node_scores,
                                                            annotations=circuit.annotations | found)])


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


def _edge_circuit(evaluator: EdgeEvaluator, spec: RunSpec, scores: np.ndarray, mask: np.ndarray,
                  faithfulness: float, extra: dict[str, Any], evaluation: dict[str, Any]) -> Circuit:
    graph = evaluator.engine.layout.graph
    nodes = graph.endpoint_mask(mask)
    runs = np.stack([mask, np.ones(graph.n_edges, bool), np.zeros(graph.n_edges, bool)])
    evaluator.metrics(runs)  # memoised: each was evaluated already, so no pass is made
    interval = _interval(*evaluator.prompt_values(runs))
    return Circuit(_provenance(spec, faithfulness, extra), evaluator.engine.model.shape, node_mask=nodes,
                   node_scores=np.full(graph.n_nodes, np.nan), edge_mask=mask, edge_scores=scores.astype(np.float64),
                   annotations={"evaluation": evaluation | interval})


def _interval(circuit: np.ndarray, full: np.ndarray, empty: np.ndarray) -> dict[str, Any]:
    """``faithfulness_interval``: the 95 % bootstrap interval of a circuit's faithfulness over its prompts, from the
    per-prompt metrics of the circuit's, the full model's and the empty circuit's passes (none where undefined)."""
    found = faithfulness_interval(circuit, full, empty, DEFAULT_BOOTSTRAP)
    if found is None:
        return {}
    return {"faithfulness_interval": {"low": found.low, "high": found.high, "samples": DEFAULT_BOOTSTRAP,
                                      "level": 0.95}}


def _acdc(engine: PatchingEngine, spec: RunSpec, progress: Progress) -> DiscoveryRun:
    """ACDC at each threshold (one sequential run each, sharing memoised evaluations), judged by its own loss,
    each circuit measured, pruned, by the run's metric like every edge circuit."""
    evaluator = EdgeEvaluator(engine, per_prompt=True)
    search = evaluator if spec.acdc_metric is engine.metric else EdgeEvaluator(PatchingEngine(
        engine.model, engine.batch, engine.ablation, spec.acdc_metric, engine.per_position))
    graph = engine.layout.graph
    sign = engine.metric.harm_sign  # each edge's harm, in the metric's sign convention
    out = []
    for i, tau in enumerate(spec.taus):
        found = acdc(search, tau, lambda tried, i=i, tau=tau: progress(i, len(spec.taus), f"tau {tau:g}: "
                                                                                       f"{tried} edges tried"))
        scores = sign * found.harm
        mask = prune(graph, found.keep)
        f = float(evaluator.faithfulness(mask[None])[0])
        curves, evaluation = _curves(evaluator, scores, spec)
        extra = {"tau": tau, "edges_tried": found.tried, "masks_tried": found.masks, "passes": found.passes,
                 "loss": found.loss, "cpr": curves["signed"].cpr, "cmd": curves["absolute"].cmd}
        out.append(_edge_circuit(evaluator, spec, scores, mask, f, extra, evaluation))
    progress(len(spec.taus), len(spec.taus), f"{search.evaluations} masked forwards")
    return DiscoveryRun(spec, evaluator.baselines, out)


METHODS: dict[Method, Callable[[PatchingEngine, RunSpec, Progress], DiscoveryRun]] = {
    Method.ABLATION: _ablation, Method.EAP: _edges, Method.EAP_IG: _edges,
    Method.PATH_PATCHING: _path_patching, Method.IPE: _ipe, Method.IPE_APPROX: _ipe, Method.ACDC: _acdc,
    Method.EDGE_PRUNING: _edge_pruning,
}


def levels_of(values: Sequence[float] | None) -> tuple[float, ...]:
    """Performance levels from the CLI, checked and sorted (default 70/80/90/97 %)."""
    return tuple(sorted(check_levels(values))) if values else DEFAULT_LEVELS
