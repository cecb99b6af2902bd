"""``circat submit``, ``jobs``, ``wait``, ``cancel`` and ``worker``: discovery as jobs.

Against a running API when ``CIRCAT_API_URL`` is set, else directly against the job database.
``submit --wait`` with neither a server nor a broker runs the embedded worker in this process.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import timedelta
from typing import Annotated, Any

import typer

from circat.service.cli.main import JsonOpt, app
from circat.service.cli.output import console, emit_json, fail, table
from circat.service.config import Settings
from circat.service.errors import CatalogueError
from circat.service.jobs.client import job_client
from circat.service.jobs.store import FINISHED, JobFilter, JobStatus, JobStore
from circat.service.progress import console_progress
from circat.workers import spec_options as opts
from circat.workers.jobs.wait import wait_jobs


def need_worker(as_json: bool) -> None:
    """Fail clearly when the worker extra (torch, TransformerLens) is not installed."""
    try:
        import torch  # noqa: F401
        import transformer_lens  # noqa: F401
    except ImportError as exc:
        fail(RuntimeError(f"this command needs the worker extra ({exc.name} is missing): "
                          "pip install 'circat[worker]'"), as_json)


@app.command()
@opts.spec_command
def submit(
    model: opts.ModelOpt, task: opts.TaskOpt, method: opts.MethodOpt, options: dict[str, Any],
    force: Annotated[bool, typer.Option(help="a new job even if an identical spec already has one")] = False,
    wait: Annotated[bool, typer.Option(help="wait for the job, with a progress bar")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Submit a discovery job (the options of ``circat discover``); print its id."""
    try:
        spec = opts.make_spec(model, task, method, options)
        job = job_client().submit(spec, force)
    except (CatalogueError, ValueError, OSError) as exc:
        fail(exc, as_json)
    if not wait:
        emit_json(job) if as_json else console.print(job["id"])
        return
    results = wait_for([job["id"]], as_json)
    emit_json(results[0]) if as_json else _print_jobs(results)
    _exit_unless_succeeded(results)


jobs_app = typer.Typer(help="List jobs, newest first; ``circat jobs prune`` removes old finished records.",
                       invoke_without_command=True)
app.add_typer(jobs_app, name="jobs")
DURATION = re.compile(r"^(\d+)([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@jobs_app.callback()
def jobs(
    ctx: typer.Context,
    status: Annotated[JobStatus | None, typer.Option(help="only jobs in this state")] = None,
    model: str | None = None, task: str | None = None, method: str | None = None,
    limit: int = 50, offset: int = 0, as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        page = job_client().list(JobFilter(status, model, task, method), limit, offset)
    except (CatalogueError, ValueError, OSError) as exc:
        fail(exc, as_json)
    if as_json:
        emit_json(page)
        return
    _print_jobs(page["items"], f"{page['total']} job(s)")


def duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` as a time span."""
    match = DURATION.match(text.strip())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration: a number and one of s, m, h, d, w (e.g. 30d)")
    return timedelta(**{UNITS[match[2]]: int(match[1])})


@jobs_app.command()
def prune(
    older_than: Annotated[timedelta, typer.Option(parser=duration, metavar="DURATION",
                                                  help="finished more than this long ago: 30d, 12h, 2w ...")],
    status: Annotated[list[JobStatus] | None, typer.Option(
        help="only jobs in these states (succeeded, failed, cancelled; default: all three)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove finished job records (never queued or running ones) from the job database; say how many. The
    catalogue's circuits are not touched."""
    try:
        removed = JobStore(Settings.from_env().database_url).prune(older_than, tuple(status or FINISHED))
    except (CatalogueError, ValueError, OSError) as exc:
        fail(exc, as_json)
    emit_json({"removed": removed}) if as_json else console.print(f"removed {removed} finished job record(s)")


@app.command("wait")
def wait_cmd(ids: Annotated[list[str], typer.Argument(help="job ids")], as_json: JsonOpt = False) -> None:
    """Wait for jobs to finish, with a live progress bar per job."""
    results = wait_for(ids, as_json)
    emit_json(results) if as_json else _print_jobs(results)
    _exit_unless_succeeded(results)


@app.command()
def cancel(job_id: str, as_json: JsonOpt = False) -> None:
    """Cancel a queued job, or a running one between its steps."""
    try:
        job = job_client().cancel(job_id)
    except (CatalogueError, ValueError, OSError) as exc:
        fail(exc, as_json)
    emit_json(job) if as_json else console.print(f"{job['id']}: {job['status']} ({job['message']})")


@app.command()
def worker(
    device: Annotated[str | None, typer.Option(envvar="CIRCAT_DEVICE", help="cpu, cuda:0 ... (one worker per GPU)")]
    = None,
    queue: Annotated[str, typer.Option(help="Celery queue to consume")] = "circat",
    concurrency: Annotated[int, typer.Option(min=1, help="Celery pool processes (1 per device)")] = 1,
    until_idle: Annotated[bool, typer.Option(help="embedded worker: stop when no job is queued")] = False,
    parent: Annotated[int | None, typer.Option(hidden=True, help="embedded worker: exit when this process has")]
    = None,
) -> None:
    """Run jobs: a Celery worker when CIRCAT_BROKER_URL is set, else the embedded worker on the job database."""
    need_worker(False)
    settings = Settings.from_env()
    if device:
        os.environ["CIRCAT_DEVICE"] = device
    if not settings.broker_url:
        from circat.workers.jobs.local import work
        from circat.workers.jobs.runner import WorkerContext

        ctx = WorkerContext.from_settings(settings, device)
        print(f"embedded worker {ctx.name} on {settings.database_url} (device {ctx.device_name})",
              file=sys.stderr, flush=True)
        work(ctx, until_idle=until_idle, parent=parent)
        return
    from circat.workers.jobs.celery_app import app as celery

    celery.worker_main(["worker", "--queues", queue, "--concurrency", str(concurrency), "--pool", "prefork",
                        "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
                        "--hostname", f"circat-{os.getpid()}@%h"])


def wait_for(ids: list[str], as_json: bool) -> list[dict[str, Any]]:
    """Poll until every job has finished, a bar per job; runs the embedded worker here when nothing else would."""
    try:
        return wait_jobs(ids, lambda i: console_progress(i, enabled=not as_json))
    except (CatalogueError, ValueError, OSError) as exc:
        fail(exc, as_json)


def _print_jobs(items: list[dict[str, Any]], title: str = "jobs") -> None:
    table(title, ["id", "status", "model", "task", "method", "progress", "circuits", "error"],
          [[j["id"], j["status"], j["spec"]["model"], _tasks(j["spec"]), j["spec"].get("method") or j["spec"]["kind"],
            j["progress"], len(j["circuit_ids"]), (j["error"] or {}).get("message")] for j in items])


def _tasks(spec: dict[str, Any]) -> str:
    """A job's task: a discovery's or an evaluation's, or a transfer's columns."""
    return spec.get("task") or ",".join(spec.get("tasks") or ["every task"])


def _exit_unless_succeeded(results: list[dict[str, Any]]) -> None:
    if any(r["status"] != JobStatus.SUCCEEDED for r in results):
        raise typer.Exit(1)

