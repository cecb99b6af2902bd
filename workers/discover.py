"""One discovery run from names: load the model and task, check the prompts, run the method.

Shared by ``circat discover`` and the job runner. Every input problem surfaces as one
``DiscoverError`` naming what is wrong, before anything is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.jobs.spec import DiscoverySpec, TaskLine
from service.models import PACKAGED
from service.progress import Progress, silent
from service.tasks import TASKS
from service.types import IgPoints
from workers.engine.layout import layout_for
from workers.engine.methods import DiscoveryRun, RunSpec, discover, levels_of
from workers.engine.node_search import component_order
from workers.models import LoadedModel, ModelLoadError, load_model
from workers.tasks import CustomTask, Metric, Split, Task, TaskFileError, get_task
from workers.tasks.encode import TaskBatch, TokenizationError, encode
from workers.tasks.render import for_tokenizer

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
    the_task = CustomTask(task, task_lines) if task_lines else for_tokenizer(get_task(task), loaded.tokenizer)
    return Prompts(loaded, the_task, encode(the_task.examples(n, seed=seed, split=Split.ALL), loaded.tokenizer))


def metric_for(task: str, metric: str | None) -> Metric:
    """``metric``, else the registered task's, else the logit difference."""
    return Metric(metric) if metric else Metric(TASKS[task].metric if task in TASKS else Metric.LOGIT_DIFF)


def run_discovery(spec: DiscoverySpec, device: str | None = None, progress: Progress = silent) -> DiscoveryRun:
    """Load, encode and run one spec; raise ``DiscoverError`` for any bad input."""
    try:
        chosen = metric_for(spec.task, spec.metric)
        prompts = prompts_for(spec.model, spec.task, spec.task_lines, spec.n, spec.seed, spec.dtype, device, progress)
        loaded, the_task, batch = prompts.model, prompts.task, prompts.batch
        for order in spec.orders or ():
            component_order(layout_for(loaded.shape), order)
        source = loaded.source if spec.model not in (loaded.name, *PACKAGED) else None
        run_spec = RunSpec(model=loaded.name, model_source=source, task=the_task.name, method=spec.method,
                           ablation=spec.ablation, metric=chosen, levels=levels_of(spec.levels),
                           per_position=spec.per_position,
                           ig_steps=spec.ig_steps, ig_points=spec.ig_points or IgPoints.MIB,
                           orders=spec.orders or ("backward",), top_n=spec.top_n,
                           absolute=not spec.signed, n_prompts=len(batch), seed=spec.seed, paths=spec.path_search)
    except INPUT_ERRORS as exc:
        raise DiscoverError(exc.args[0] if isinstance(exc, KeyError) else str(exc)) from exc
    progress(0, None, "model and prompts ready")
    try:
        return discover(loaded, batch, run_spec, progress)
    except ValueError as exc:
        raise DiscoverError(str(exc)) from exc
