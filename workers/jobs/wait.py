"""Waiting for jobs: poll until each has finished, one progress callback per job, and run the embedded worker
in this process when neither an API nor a broker would run them. ``circat wait`` and ``circat.Job.wait`` use it."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from circat.service.config import Settings
from circat.service.jobs.client import job_client
from circat.service.jobs.store import JobStatus
from circat.service.progress import Progress

WAIT_POLL_S = 0.2
Bars = Callable[[str], AbstractContextManager[Progress]]


def wait_jobs(ids: list[str], bar: Bars) -> list[dict[str, Any]]:
    """The finished jobs' views, in the order of ``ids``; ``bar(job_id)`` opens each job's progress display."""
    settings = Settings.from_env()
    client = job_client(settings)
    embedded = not settings.api_url and not settings.broker_url
    done: dict[str, dict[str, Any]] = {}
    bars = {i: bar(i) for i in ids}
    ticks = {i: b.__enter__() for i, b in bars.items()}
    runner: threading.Thread | None = None
    stop = threading.Event()
    try:
        while len(done) < len(ids):
            if embedded and (runner is None or not runner.is_alive()):
                runner = threading.Thread(target=_run_queued_here, args=(settings, stop), daemon=True)
                runner.start()
            for i in ids:
                if i in done:
                    continue
                job = client.get(i)
                ticks[i](round(100 * (job["progress"] or 0)), 100, f"{job['status']}: {job['message'] or ''}")
                if JobStatus(job["status"]).finished:
                    done[i] = job
            time.sleep(0 if len(done) == len(ids) else WAIT_POLL_S)
    finally:
        stop.set()  # the in-process worker finishes the job in hand (never left half-run), then stops
        if runner is not None:
            runner.join()
        for b in bars.values():
            b.__exit__(*sys.exc_info())
    return [done[i] for i in ids]


def _run_queued_here(settings: Settings, stop: threading.Event) -> None:
    from circat.workers.jobs.local import work
    from circat.workers.jobs.runner import WorkerContext

    work(WorkerContext.from_settings(settings, os.environ.get("CIRCAT_DEVICE")), stop=stop, until_idle=True)
