"""One discovery run from names: load the model and task, check the prompts, run the method.

Shared by ``circat discover`` and the job runner. Every input problem surfaces as one
``DiscoverError`` naming what is wrong, before anything is stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from circat.service.catalogue import Catalogue
from circat.service.circuit import Circuit
from circat.service.jobs.spec import DiscoverySpec, Pruning, TaskLine
from circat.service.models import PACKAGED
from circat.service.progress import Progress, silent
from circat.service.stability import StabilityRecord, level_key, level_stability
from circat.service.stores.base import Membership
from circat.service.tasks import TASKS
from circat.service.types import Gradient, IgPoints
from circat.workers.engine.acdc import DEFAULT_TAU
from circat.workers.engine.edge_pruning import PruningConfig
from circat.workers.engine.layout import layout_for
from circat.workers.engine.methods import DiscoveryRun, RunSpec, discover, levels_of
from circat.workers.engine.node_search import component_order
from circat.workers.models import LoadedModel, ModelLoadError, load_model
from circat.workers.tasks import CustomTask, Metric, Split, Task, TaskFileError, get_task
from circat.workers.tasks.encode import TaskBatch, TokenizationError, encode
from circat.workers.tasks.render import for_tokenizer

INPUT_ERRORS = (ModelLoadError, TokenizationError, TaskFileError, KeyError, ValueError)
"""what a bad model, task, prompt or parameter raises while a run is prepared"""


class DiscoverError(ValueError):
    """A discovery run that cannot start: bad model, task, prompts or parameters."""


@dataclass(frozen=True, eq=False)
class Prompts:
    """A loaded model with the encoded prompts of one task: what every run on (model, task, n, seed) starts from."""

    model: LoadedModel
    task: Task
    batch: TaskBatch


def prompts_for(model: str, task: str, task_lines: tuple[TaskLine, ...] | None, n: int, seed: int, dtype: str,
                device: str | None, progress: Progress = silent) -> Prompts:
    """Load ``model`` and encode ``n`` prompts of ``task`` drawn with ``seed`` (a custom task from its lines)."""
    loaded = load_model(model, device, dtype, progress)
    the_task = task_for(task, task_lines, loaded)
    return Prompts(loaded, the_task, encode(the_task.examples(n, seed=seed, split=Split.ALL), loaded.tokenizer))


def task_for(task: str, task_lines: tuple[TaskLine, ...] | None, loaded: LoadedModel) -> Task:
    """The custom task of ``task_lines``, else registered ``task`` rendered for the model's tokenizer."""
    return CustomTask(task, task_lines) if task_lines else for_tokenizer(get_task(task), loaded.tokenizer)


def metric_for(task: str, metric: str | None) -> Metric:
    """``metric``, else the registered task's, else the logit difference."""
    return Metric(metric) if metric else Metric(TASKS[task].metric if task in TASKS else Metric.LOGIT_DIFF)


@dataclass(frozen=True)
class Resampled:
    """The runs of a spec's prompt sets (one per resample, in seed order) and, above one, their stability."""

    runs: list[DiscoveryRun]
    stability: StabilityRecord | None

    @property
    def circuits(self) -> list[Circuit]:
        """Every circuit, run by run."""
        return [c for run in self.runs for c in run.circuits]


def store_run(cat: Catalogue, done: Resampled) -> list[str]:
    """Store a run's circuits (one transaction) and its stability summary; the circuits' ids."""
    ids = cat.add_many(done.circuits)
    if done.stability is not None:
        cat.add_stability(done.stability)
    return ids


def run_discovery(spec: DiscoverySpec, device: str | None = None, progress: Progress = silent) -> DiscoveryRun:
    """Load, encode and run one spec of one resample; raise ``DiscoverError`` for any bad input."""
    if spec.resamples != 1:
        raise DiscoverError("a spec with resamples runs through run_resampled")
    return run_resampled(spec, device, progress).runs[0]


def run_resampled(spec: DiscoverySpec, device: str | None = None, progress: Progress = silent) -> Resampled:
    """Load the model once and run ``spec`` on each of its ``resamples`` prompt sets; with more than one, the
    stability summary of their circuits. ``DiscoverError`` for any bad input, before any run."""
    with _input_errors():
        chosen = metric_for(spec.task, spec.metric)
        loaded = load_model(spec.model, device, spec.dtype, progress)
        the_task = task_for(spec.task, spec.task_lines, loaded)
        for order in spec.orders or ():
            component_order(layout_for(loaded.shape), order)
        batches = [encode(the_task.examples(spec.n, seed=spec.seed + r, split=Split.ALL), loaded.tokenizer)
                   for r in range(spec.resamples)]
        run_specs = [_run_spec(spec.resample(r), loaded, the_task, chosen, len(b)) for r, b in enumerate(batches)]
    progress(0, None, "model and prompts ready")
    runs = []
    for r, (batch, run_spec) in enumerate(zip(batches, run_specs, strict=True)):
        try:
            runs.append(discover(loaded, batch, run_spec, _of_resample(progress, r, spec.resamples)))
        except ValueError as exc:
            raise DiscoverError(str(exc)) from exc
    return Resampled(runs, stability_of(spec, runs) if spec.resamples > 1 else None)


@contextmanager
def _input_errors() -> Iterator[None]:
    """Raise what a bad model, task, prompt or parameter raises as one ``DiscoverError``."""
    try:
        yield
    except INPUT_ERRORS as exc:
        raise DiscoverError(exc.args[0] if isinstance(exc, KeyError) else str(exc)) from exc


def _run_spec(spec: DiscoverySpec, loaded: LoadedModel, task: Task, metric: Metric, n_prompts: int) -> RunSpec:
    source = loaded.source if spec.model not in (loaded.name, *PACKAGED) else None
    return RunSpec(model=loaded.name, model_source=source, task=task.name, method=spec.method,
                   ablation=spec.ablation, metric=metric, levels=levels_of(spec.levels),
                   per_position=spec.per_position, ig_steps=spec.ig_steps, ig_points=spec.ig_points or IgPoints.MIB,
                   orders=spec.orders or ("backward",), top_n=spec.top_n, absolute=not spec.signed,
                   n_prompts=n_prompts, seed=spec.seed, paths=spec.path_search, taus=spec.taus or (DEFAULT_TAU,),
                   acdc_metric=Metric(spec.metric) if spec.metric else Metric.KL,
                   pruning=PruningConfig(**(spec.pruning or Pruning()).model_dump()),
                   gradient=spec.gradient or Gradient.PLAIN)


def _of_resample(progress: Progress, r: int, resamples: int) -> Progress:
    """``progress`` of one resample's run: as it is for one, else resamples done of all, with the run's message."""
    if resamples == 1:
        return progress
    return lambda done, total, message: progress(r, resamples, f"resample {r + 1}/{resamples}: {message}")


def stability_of(spec: DiscoverySpec, runs: list[DiscoveryRun]) -> StabilityRecord:
    """The stability summary of a resampled run: per circuit level, the circuits of every resample."""
    first = runs[0].spec
    keys = [level_key(c.provenance.params) for c in runs[0].circuits]
    levels = [level_stability(key, [Membership.of(run.circuits[i]) for run in runs]) for i, key in enumerate(keys)]
    return StabilityRecord(first.model, first.task, first.method.value, spec.canonical_json(),
                           tuple(run.spec.seed for run in runs), tuple(levels))
