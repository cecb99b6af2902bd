"""Discovery, evaluation, jobs, tasks and models from Python: the functions ``circat discover``, ``evaluate``,
``transfer``, ``submit``, ``wait``, ``tasks`` and ``models`` call, with notebook progress bars (``tqdm.auto``).

torch and the engine load when one of these runs, never on ``import circat``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.jobs.spec import DiscoverySpec
from circat.service.progress import Progress, console_progress, silent
from circat.service.tasks import TASKS, task_rows
from circat.views import CircuitView, Rows, html_table, pandas

if TYPE_CHECKING:
    from circat.catalogue import Catalogue
    from circat.workers.models import LoadedModel


@contextmanager
def notebook_progress(title: str, enabled: bool = True) -> Iterator[Progress]:
    """A ``tqdm.auto`` bar (a widget in Jupyter, text elsewhere); the console bar when tqdm is missing."""
    if not enabled:
        yield silent
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        with console_progress(title) as tick:
            yield tick
        return
    bar = tqdm(desc=title, total=None)

    def tick(done: int, total: int | None, message: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        yield tick
    finally:
        bar.close()


def tasks() -> Rows:
    """The registered tasks: name, family, metric, description."""
    return Rows(task_rows(), caption="tasks")


def load_model(name: str, device: str | None = None, dtype: str = "float32") -> LoadedModel:
    """Load a model as the workers do (``toy``, a packaged name such as ``smollm2-135m``, a hub name or a local
    Hugging Face directory): ``.bridge`` is its TransformerBridge with the engine's hooks, ``.tokenizer`` its
    tokenizer, ``.shape`` the catalogue's view of it."""
    from circat.workers.models import load_model as load

    return load(name, device, dtype)


def discover(model: str, task: str, method: str, store: str | None = None, device: str | None = None,
             progress: bool = True, **options: Any) -> list[CircuitView]:
    """Run a discovery here and store its circuits in the catalogue (``store``: a URL, default the configured one);
    the stored circuits. ``options`` are the spec's fields as ``circat discover`` takes them (``levels``,
    ``ablation``, ``metric``, ``n``, ``seed``, ``top_n``, ``ig_steps``, ``taus``, ``resamples`` ...)."""
    from circat.catalogue import open as open_catalogue
    from circat.workers.discover import run_resampled, store_run

    spec = DiscoverySpec.parse({"model": model, "task": task, "method": method, **options})
    with notebook_progress(f"{spec.method.value} {spec.task}", progress) as tick:
        done = run_resampled(spec, device, tick)
    with open_catalogue(store) as cat:
        store_run(cat.core, done)
    return [CircuitView(c) for c in done.circuits]


def evaluate(cat: Catalogue, expressions: list[str], model: str, task: str, device: str | None, progress: bool,
             save: bool, **options: Any) -> Rows:
    """``Catalogue.evaluate``: run ``circat evaluate``'s evaluation here and store its records (and circuits)."""
    from circat.workers.evaluation import run_evaluation, store_evaluation

    spec = EvaluationSpec(expressions=tuple(expressions), model=model, task=task, **options)
    with notebook_progress(f"evaluating on {task}", progress) as tick:
        run = run_evaluation(spec, cat.core, device, tick)
    records, _ = store_evaluation(cat.core, run, save)
    return Rows(records, caption=f"evaluations on {model} / {task}")


class Transfer:
    """A transfer matrix: rows (circuits, expressions) by tasks; a table in Jupyter (``*``: the circuit's own
    task), a DataFrame on request."""

    def __init__(self, matrix: Any) -> None:
        self.matrix = matrix

    def to_pandas(self) -> Any:
        """The values as a DataFrame: one row per expression, one column per task."""
        m = self.matrix
        return pandas().DataFrame([r.values for r in m.rows], index=[r.expression for r in m.rows],
                                  columns=list(m.tasks))

    def _repr_html_(self) -> str:
        m = self.matrix
        rows = [{"circuit": r.expression, **{t: f"{r.values[t]:.2f}{'*' if t == r.own_task else ''}"
                                             for t in m.tasks}} for r in m.rows]
        return html_table(rows, f"transfer matrix of {m.model} ({m.mode}); * its own task")


def transfer(cat: Catalogue, model: str, tasks: list[str] | None, circuits: list[str] | None,
             expressions: list[str] | None, device: str | None, progress: bool, **options: Any) -> Transfer:
    """``Catalogue.transfer``: run ``circat transfer``'s matrix here; every cell stored as an evaluation."""
    from circat.workers.transfer import transfer_matrix

    rows = [*(circuits or ()), *(expressions or ())]
    if not rows:
        raise ValueError("give circuits or expressions as the transfer matrix's rows")
    spec = EvaluationSpec(kind="transfer", expressions=tuple(rows), model=model, tasks=tuple(tasks or TASKS),
                          **options)
    with notebook_progress("transfer matrix", progress) as tick:
        return Transfer(transfer_matrix(spec, cat.core, device, tick))


class Job:
    """A submitted job: ``.status``, ``.wait()`` with a progress bar, then ``.circuits()``."""

    def __init__(self, view: dict[str, Any]) -> None:
        self.view = view

    @property
    def id(self) -> str:
        return self.view["id"]

    @property
    def status(self) -> str:
        """The job's state now (queued, running, succeeded, failed, cancelled)."""
        from circat.service.jobs.client import job_client

        self.view = job_client().get(self.id)
        return self.view["status"]

    def wait(self, progress: bool = True) -> Job:
        """Wait until the job has finished (running it in this process when no worker would); itself."""
        from circat.workers.jobs.wait import wait_jobs

        (self.view,) = wait_jobs([self.id], lambda i: notebook_progress(f"job {i}", progress))
        return self

    def circuits(self, store: str | None = None) -> list[CircuitView]:
        """The circuits the job stored (none until it has succeeded)."""
        from circat.catalogue import open as open_catalogue

        with open_catalogue(store) as cat:
            return [cat.get(i) for i in self.view["circuit_ids"]]

    def __repr__(self) -> str:
        return f"<circat.Job {self.id} {self.view['status']}>"


def submit(model: str, task: str, method: str, force: bool = False, **options: Any) -> Job:
    """Queue a discovery job (the API's when ``CIRCAT_API_URL`` is set, else the job database's); its handle."""
    from circat.service.jobs.client import job_client

    spec = DiscoverySpec.parse({"model": model, "task": task, "method": method, **options})
    return Job(job_client().submit(spec, force))
