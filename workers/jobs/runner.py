"""Running one job: claim it, discover through the same code path as ``circat discover``, store the
circuits, record the outcome. Shared by the local worker and the Celery task.

A job's circuits are content-addressed, so running a job twice (a redelivery after a worker died)
stores the same circuits once. When the catalogue is unreachable, storing is retried with backoff;
if it stays down the job fails with the reason and the circuits it had stored are removed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

from service.catalogue import Catalogue
from service.circuit import Circuit
from service.config import Settings
from service.errors import NotFound, StoreUnavailable
from service.jobs.store import Job, JobStore
from service.limits import Limits
from service.stores import CircuitStore, open_store
from workers.discover import DiscoverError, run_discovery

log = logging.getLogger("circat.worker")


class JobCancelled(Exception):
    """Cancellation was requested while the job ran."""


@dataclass(frozen=True)
class WorkerContext:
    """Where a worker records jobs and stores circuits, and what it runs on."""

    jobs: JobStore
    store_url: str | None
    device: str | None
    name: str = f"{socket.gethostname()}:{os.getpid()}"
    store_retries: int = 5
    retry_base_s: float = 1.0

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
    def progress(done: int, total: int | None, message: str) -> None:
        if not ctx.jobs.progress(job.id, done / total if total else None, message):
            raise JobCancelled

    try:
        run = run_discovery(job.spec, ctx.device, progress)
        progress(1, 1, "storing circuits")
        ids = _store(ctx, run.circuits)
    except JobCancelled:
        ctx.jobs.cancelled(job.id)
        return
    except DiscoverError as exc:
        ctx.jobs.fail(job.id, "DiscoverError", str(exc))
        return
    except StoreUnavailable as exc:
        ctx.jobs.fail(job.id, "StoreUnavailable", f"catalogue store unreachable after {ctx.store_retries} retries: "
                      f"{exc}")
        return
    except Exception as exc:
        log.exception("job %s failed", job.id)
        ctx.jobs.fail(job.id, type(exc).__name__, str(exc) or repr(exc))
        return
    ctx.jobs.succeed(job.id, ids)


def _store(ctx: WorkerContext, circuits: list[Circuit]) -> list[str]:
    """Store every circuit, retrying while the store is unreachable; on giving up, remove what this job added."""
    added: list[str] = []
    for attempt in range(ctx.store_retries + 1):
        try:
            with open_store(ctx.store_url) as store:
                cat = Catalogue(store, Limits.from_env())
                for c in circuits:
                    if c.id not in added and not _has(store, c.id):
                        added.append(cat.add(c))
                return [c.id for c in circuits]
        except StoreUnavailable:
            if attempt == ctx.store_retries:
                _remove(ctx, added)
                raise
            time.sleep(ctx.retry_base_s * 2**attempt)
    raise AssertionError("unreachable")


def _has(store: CircuitStore, circuit_id: str) -> bool:
    try:
        store.get(circuit_id)
    except NotFound:
        return False
    return True


def _remove(ctx: WorkerContext, ids: list[str]) -> None:
    try:
        with open_store(ctx.store_url) as store:
            for cid in ids:
                store.delete(cid)
    except (StoreUnavailable, NotFound):
        log.warning("could not remove circuits %s of a failed job", ids)
