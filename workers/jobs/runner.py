"""Running one job: claim it, discover (or evaluate, extend, transfer) through the same code path as the CLI,
store the circuits and evaluations, record the outcome. Shared by the local worker and the Celery task.

A job's circuits are content-addressed and stored in one transaction, so running a job twice (a
redelivery after a worker died) stores the same circuits once, and a failed write stores none. When
the catalogue is unreachable, storing is retried with backoff; if it stays down the job fails with
the reason. The worker keeps its catalogue connection open across jobs, and writes progress at most
every ``PROGRESS_EVERY_S`` (cancellation is checked at each write).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field

from circat.service.catalogue import Catalogue
from circat.service.circuit import Circuit
from circat.service.config import Settings
from circat.service.errors import NotFound, StoreUnavailable
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.jobs.store import Job, JobStore
from circat.service.limits import Limits
from circat.service.progress import Progress
from circat.service.stability import StabilityRecord
from circat.service.stores import CircuitStore, open_store
from circat.workers.discover import DiscoverError, run_resampled
from circat.workers.evaluation import EvaluateError, records_of, run_evaluation, run_extension
from circat.workers.transfer import transfer_matrix

log = logging.getLogger("circat.worker")
PROGRESS_EVERY_S = 0.25


class JobCancelled(Exception):
    """Cancellation was requested while the job ran."""


class OpenStore:
    """The worker's catalogue, opened on first use and kept across jobs; dropped after it failed."""

    def __init__(self, url: str | None):
        self.url = url
        self.store: CircuitStore | None = None

    def get(self) -> CircuitStore:
        if self.store is None:
            self.store = open_store(self.url)
        return self.store

    def drop(self) -> None:
        if self.store is not None:
            store, self.store = self.store, None
            try:
                store.close()
            except StoreUnavailable:
                log.warning("closing the unreachable catalogue failed")


@dataclass(frozen=True)
class WorkerContext:
    """Where a worker records jobs and stores circuits, and what it runs on."""

    jobs: JobStore
    store_url: str | None
    device: str | None
    name: str = f"{socket.gethostname()}:{os.getpid()}"
    store_retries: int = 5
    retry_base_s: float = 1.0
    catalogue: OpenStore = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "catalogue", OpenStore(self.store_url))

    @staticmethod
    def from_settings(settings: Settings, device: str | None, name: str | None = None) -> WorkerContext:
        """A worker's context from the configuration (job database, catalogue, retries)."""
        return WorkerContext(JobStore(settings.database_url), settings.store_url, device,
                             name or f"{socket.gethostname()}:{os.getpid()}", settings.store_retries,
                             settings.store_retry_s)

    @property
    def device_name(self) -> str:
        return self.device or "auto"


def run_job(ctx: WorkerContext, job_id: str, redelivered: bool = False) -> None:
    """Claim a job (a redelivered one even while marked running) and run it; no-op if another worker has it."""
    try:
        claimed = ctx.jobs.claim(job_id, ctx.name, ctx.device_name, redelivered)
    except NotFound:
        log.warning("job %s is not in the job database", job_id)
        return
    if claimed:
        run_claimed(ctx, ctx.jobs.get(job_id))


def run_claimed(ctx: WorkerContext, job: Job) -> None:
    """Run a job this worker has claimed, and record how it ended."""
    written = 0.0

    def progress(done: int, total: int | None, message: str) -> None:
        nonlocal written
        now = time.monotonic()
        if now - written < PROGRESS_EVERY_S and not (total and done >= total):
            return
        written = now
        if not ctx.jobs.progress(job.id, done / total if total else None, message):
            raise JobCancelled

    try:
        if isinstance(job.spec, EvaluationSpec):
            ids, evaluations = _functional(ctx, job.spec, progress)
        else:
            done = run_resampled(job.spec, ctx.device, progress)
            progress(1, 1, "storing circuits")
            ids, evaluations = _store(ctx, done.circuits, done.stability), []
    except JobCancelled:
        ctx.jobs.cancelled(job.id)
        return
    except (DiscoverError, EvaluateError) as exc:
        ctx.jobs.fail(job.id, type(exc).__name__, str(exc))
        return
    except NotFound as exc:
        ctx.jobs.fail(job.id, "NotFound", str(exc))
        return
    except StoreUnavailable as exc:
        ctx.jobs.fail(job.id, "StoreUnavailable", f"catalogue store unreachable after {ctx.store_retries} retries: "
                      f"{exc}")
        return
    except Exception as exc:
        log.exception("job %s failed", job.id)
        ctx.jobs.fail(job.id, type(exc).__name__, str(exc) or repr(exc))
        return
    ctx.jobs.succeed(job.id, ids, evaluations)


def _functional(ctx: WorkerContext, spec: EvaluationSpec, progress: Progress) -> tuple[list[str], list[str]]:
    """Run a functional job on the worker's catalogue; the circuits it stored (extend) and its evaluations."""
    cat = Catalogue(ctx.catalogue.get(), Limits.from_env())
    if spec.kind == "transfer":
        return [], transfer_matrix(spec, cat, ctx.device, progress).evaluation_ids
    if spec.kind == "extend":
        _, _, circuit = run_extension(spec, cat, ctx.device, progress)
        return _store(ctx, [circuit]), []
    run = run_evaluation(spec, cat, ctx.device, progress)
    return [], [s.id for s in cat.add_evaluations(records_of(run))]


def _store(ctx: WorkerContext, circuits: list[Circuit], stability: StabilityRecord | None = None) -> list[str]:
    """Store every circuit in one transaction, then a resampled run's stability summary, retrying with backoff
    while the store is unreachable (both writes are idempotent, so a retry or a redelivery completes them)."""
    for attempt in range(ctx.store_retries + 1):
        try:
            cat = Catalogue(ctx.catalogue.get(), Limits.from_env())
            ids = cat.add_many(circuits)
            if stability is not None:
                cat.add_stability(stability)
            return ids
        except StoreUnavailable:
            ctx.catalogue.drop()
            if attempt == ctx.store_retries:
                raise
            time.sleep(ctx.retry_base_s * 2**attempt)
    raise AssertionError("unreachable")
