"""The Celery app: one task that runs a job through the shared runner (``workers.jobs.runner``).

Settings for long GPU jobs: late acks with one message prefetched, so a job whose worker dies is
delivered again; ``task_reject_on_worker_lost`` requeues it at once when the pool child dies; the
Redis visibility timeout (``CIRCAT_VISIBILITY_TIMEOUT_S``) must exceed the longest job. A
redelivered job may be claimed while its record still says running; its circuits are
content-addressed, so a second run stores nothing new and the record ends succeeded once.
"""

from __future__ import annotations

import os
import socket

from celery import Celery, Task
from celery.signals import worker_process_init

from circat.service.config import Settings
from circat.service.jobs.dispatch import QUEUE, TASK_NAME, celery_settings
from circat.workers.jobs.runner import WorkerContext

_settings = Settings.from_env()
app = Celery("circat")
app.conf.update(celery_settings(_settings.broker_url or "redis://127.0.0.1:6379/0", _settings.job_time_limit_s))
_context: WorkerContext | None = None


def context() -> WorkerContext:
    """This worker process's context (job database, catalogue, device), made once per process."""
    global _context
    if _context is None:
        _context = WorkerContext.from_settings(Settings.from_env(), os.environ.get("CIRCAT_DEVICE") or None,
                                               f"celery@{socket.gethostname()}:{os.getpid()}")
    return _context


@worker_process_init.connect
def _fresh_context(**_: object) -> None:
    """Each pool process opens its own connections (and CUDA, when it first loads a model)."""
    global _context
    _context = None


@app.task(name=TASK_NAME, bind=True, queue=QUEUE, ignore_result=True)
def run_job_task(self: Task, job_id: str) -> None:
    """Run one job by id (claimed even while its record says running: this delivery is the live one)."""
    from circat.workers.jobs.runner import run_job

    run_job(context(), job_id, redelivered=True)
