"""One discovery run from names: load the model and task, check the prompts, run the method.

Shared by ``circat discover`` and the job runner. Every input problem surfaces as one
``DiscoverError`` naming what is wrong, before anything is stored.
"""

from __future__ import annotations

from service.jobs.spec import DiscoverySpec
from service.models import PACKAGED
from service.progress import Progress, silent
from service.tasks import TASKS
from workers.engine.layout import layout_for
from workers.engine.methods import DiscoveryRun, RunSpec, discover, levels_of
from workers.engine.node_search import component_order
from workers.models import ModelLoadError, load_model
from workers.tasks import CustomTask, Metric, Split, TaskFileError, get_task
from workers.tasks.encode import TokenizationError, encode
from workers.tasks.render import for_tokenizer


class DiscoverError(ValueError):
    """A discovery run that cannot start: bad model, task, prompts or parameters."""


def run_discovery(spec: DiscoverySpec, device: str | None = None, progress: Progress = silent) -> DiscoveryRun:
    """Load, encode and run one spec; raise ``DiscoverError`` for any bad input."""
    try:
        chosen = Metric(spec.metric) if spec.metric else Metric(TASKS[spec.task].metric if spec.task in TASKS
                                                                else Metric.LOGIT_DIFF)
        loaded = load_model(spec.model, device, spec.dtype, progress)
        for order in spec.orders or ():
            component_order(layout_for(loaded.shape), order)
        the_task = (CustomTask(spec.task, spec.task_lines) if spec.task_lines
                    else for_tokenizer(get_task(spec.task), loaded.tokenizer))
        batch = encode(the_task.examples(spec.n, seed=spec.seed, split=Split.ALL), loaded.tokenizer)
        source = loaded.source if spec.model not in (loaded.name, *PACKAGED) else None
        run_spec = RunSpec(model=loaded.name, model_source=source, task=the_task.name, method=spec.method,
                           ablation=spec.ablation, metric=chosen, levels=levels_of(spec.levels),
                           per_position=spec.per_position,
                           ig_steps=spec.ig_steps, orders=spec.orders or ("backward",), top_n=spec.top_n,
                           absolute=not spec.signed, n_prompts=len(batch), seed=spec.seed, paths=spec.path_search)
    except (ModelLoadError, TokenizationError, TaskFileError, KeyError, ValueError) as exc:
        raise DiscoverError(exc.args[0] if isinstance(exc, KeyError) else str(exc)) from exc
    progress(0, None, "model and prompts ready")
    try:
        return discover(loaded, batch, run_spec, progress)
    except ValueError as exc:
        raise DiscoverError(str(exc)) from exc
