"""One functional evaluation from names: expressions over the catalogue, on a model and task, kept or knocked out.

Shared by ``circat evaluate`` and (through the same spec) the jobs to come. The prompts are discovery's for
the same task, count and seed (``workers.discover.prompts_for``), so a discovery circuit evaluated on its
own task with its own prompts, metric and ablation gives back the faithfulness stored with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from circat.service.catalogue import Catalogue
from circat.service.circuit import Circuit, Provenance
from circat.service.effects import ComponentEffects
from circat.service.errors import NotFound
from circat.service.expressions import ExpressionError, Selection, parse, select
from circat.service.graph import graph_for
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.progress import Progress, silent
from circat.service.stores.base import EvaluationRecord
from circat.service.tasks import family_of
from circat.service.types import Level, Mode, ModelShape
from circat.workers.discover import INPUT_ERRORS, metric_for, prompts_for
from circat.workers.engine.functional import (
    DEFAULT_CANDIDATES,
    Extension,
    FunctionalResult,
    component_effects,
    evaluate_selections,
    extend_selection,
)
from circat.workers.engine.patching import PatchingEngine

DEFAULT_THRESHOLD = 0.8
"""the faithfulness ``extend`` grows a circuit to, unless the spec says"""


class EvaluateError(ValueError):
    """An evaluation that cannot run: bad expression, model, task, prompts or parameters."""


@dataclass(frozen=True)
class EvaluationRun:
    """The spec as run (the model under its catalogue name, the metric in force) and a result per expression."""

    spec: EvaluationSpec
    model: str
    metric: str
    n_prompts: int
    results: list[FunctionalResult]


@dataclass(frozen=True, eq=False)
class Prepared:
    """What every functional run starts from: the engine over the task's prompts and the selections."""

    engine: PatchingEngine
    selections: list[Selection]
    metric: str

    @property
    def model(self) -> str:
        return self.engine.model.name

    @property
    def n_prompts(self) -> int:
        return len(self.engine.batch)


@contextmanager
def _input_errors() -> Iterator[None]:
    """Report bad input (expression, model, task, prompts, parameters) as ``EvaluateError``; unknown ids as is."""
    try:
        yield
    except NotFound:
        raise
    except (*INPUT_ERRORS, ExpressionError) as exc:
        raise EvaluateError(exc.args[0] if isinstance(exc, KeyError) else str(exc)) from exc


def prepare(spec: EvaluationSpec, cat: Catalogue, device: str | None = None,
            progress: Progress = silent) -> Prepared:
    """Load the model and prompts, parse and select every expression over the catalogue, build the engine."""
    if spec.task is None:
        raise EvaluateError(f"a {spec.kind} spec names no task to evaluate on")
    with _input_errors():
        metric = metric_for(spec.task, spec.metric)
        prompts = prompts_for(spec.model, spec.task, None, spec.n, spec.seed, spec.dtype, device, progress)
        model = prompts.model
        selections = [select(parse(text, cat.limits.max_expression_length), model.name, model.shape,
                             cat.store.memberships, spec.level, cat.limits.max_ids) for text in spec.expressions]
        progress(0, None, "model, prompts and circuits ready")
        engine = PatchingEngine(model, prompts.batch, spec.ablation, metric, spec.per_position)
    return Prepared(engine, selections, metric.value)


def run_evaluation(spec: EvaluationSpec, cat: Catalogue, device: str | None = None,
                   progress: Progress = silent) -> EvaluationRun:
    """Parse and select every expression, then evaluate them in one batch; ``EvaluateError`` for bad input."""
    ready = prepare(spec, cat, device, progress)
    with _input_errors():
        results = evaluate_selections(ready.engine, ready.selections, spec.mode, spec.bootstrap, spec.seed)
    return EvaluationRun(spec, ready.model, ready.metric, ready.n_prompts, results)


def run_components(spec: EvaluationSpec, cat: Catalogue, device: str | None = None,
                   progress: Progress = silent) -> tuple[Prepared, ComponentEffects]:
    """Component importance inside the one expression of ``spec`` (node level) on its task."""
    if len(spec.expressions) != 1:
        raise EvaluateError("component importance takes one circuit or expression")
    ready = prepare(spec, cat, device, progress)
    with _input_errors():
        return ready, component_effects(ready.engine, ready.selections[0])


def run_extension(spec: EvaluationSpec, cat: Catalogue, device: str | None = None,
                  progress: Progress = silent) -> tuple[Prepared, Extension, Circuit]:
    """Grow the one expression of ``spec`` on its task to its threshold (default 0.8); the grown circuit (method
    ``extend``), with its faithfulness and provenance (the expression, the circuits it derives from, what was added)."""
    level = spec.threshold or DEFAULT_THRESHOLD
    candidates = DEFAULT_CANDIDATES if spec.candidates is None else spec.candidates
    ready = prepare(spec, cat, device, progress)
    with _input_errors():
        grown = extend_selection(ready.engine, ready.selections[0], level, candidates)
    s = ready.selections[0]
    params = _params(s, spec, ready.n_prompts) | {"level": level, "items": grown.level.value, "added": grown.added,
                                                  "reached": grown.reached}
    if grown.level is Level.EDGE:
        params["candidates"] = candidates
    provenance = Provenance(model=ready.model, task=spec.task, method="extend", task_family=family_of(spec.task),
                            params=params, metric=ready.metric, faithfulness=grown.faithfulness[-1])
    return ready, grown, _circuit(provenance, s.shape, grown.mask if grown.level is Level.NODE else None,
                                  grown.mask if grown.level is Level.EDGE else None)


def _circuit(provenance: Provenance, shape: ModelShape, nodes: np.ndarray | None,
             edges: np.ndarray | None) -> Circuit:
    """A circuit of unscored items: ``nodes`` (node level), or ``edges`` and their endpoints (edge level)."""
    graph = graph_for(shape)
    if edges is not None:
        nodes = graph.endpoint_mask(edges) | ~graph.component_mask
    assert nodes is not None
    return Circuit(provenance, shape, node_mask=nodes, node_scores=np.full(len(nodes), np.nan), edge_mask=edges,
                   edge_scores=None if edges is None else np.full(len(edges), np.nan))


def _params(s: Selection, spec: EvaluationSpec, n_prompts: int) -> dict[str, object]:
    """The provenance of a circuit made from an expression: what it came from and the prompts it was judged on."""
    return {"expression": s.text, "derived_from": list(s.operands), "ablation": spec.ablation.value,
            "per_position": spec.per_position, "n_prompts": n_prompts, "seed": spec.seed}


def records_of(run: EvaluationRun) -> list[EvaluationRecord]:
    """The catalogue's records of a run: one per expression, identified by what was evaluated and how."""
    spec = run.spec
    return [EvaluationRecord(model=run.model, task=spec.task, expression=r.selection.text,
                             circuits=r.selection.operands, mode=r.mode.value, level=r.selection.level.value,
                             metric=run.metric, ablation=spec.ablation.value, per_position=spec.per_position,
                             n_prompts=run.n_prompts, seed=spec.seed, value=r.value, metric_value=r.metric,
                             full_metric=r.full, empty_metric=r.empty,
                             low=None if r.interval is None else r.interval.low,
                             high=None if r.interval is None else r.interval.high) for r in run.results]


def store_evaluation(cat: Catalogue, run: EvaluationRun, save: bool) -> tuple[list[EvaluationRecord], list[str]]:
    """Store a run's evaluation records and, with ``save``, each expression's circuit; the records and the
    circuits' ids."""
    records = records_of(run)
    cat.add_evaluations(records)
    return records, [cat.add(expression_circuit(run, r)) for r in run.results] if save else []


def expression_circuit(run: EvaluationRun, result: FunctionalResult) -> Circuit:
    """A selection as a catalogue circuit (method ``expression``): its provenance names the expression, the circuits
    it was derived from and its faithfulness on the evaluated task (keep mode)."""
    s: Selection = result.selection
    spec = run.spec
    if s.n_components == 0 and not s.n_edges:
        raise EvaluateError(f"{s.text} selects nothing: an empty circuit cannot be stored")
    params = _params(s, spec, run.n_prompts) | {"items": s.level.value}  # "level" is a faithfulness target
    faithfulness = result.value if result.mode is Mode.KEEP else None
    provenance = Provenance(model=run.model, task=spec.task, method="expression", task_family=family_of(spec.task),
                            params=params, metric=run.metric, faithfulness=faithfulness)
    return _circuit(provenance, s.shape, s.node_mask, s.edge_mask)
