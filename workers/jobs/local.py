"""The embedded worker: with no broker configured, jobs run here, taken from the job database in order.

``circat serve`` starts one in a child process (which exits when the server does); ``circat submit
--wait`` runs one in-process when no server runs; ``circat worker`` without a broker runs this loop.
Same records, same runner as Celery. On start it requeues the jobs that embedded workers of this
host left running when their process died. While idle it watches the SQLite job database's files (a stat
call every few milliseconds) and queries only when they change, or once a second.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from circat.workers.jobs.runner import WorkerContext, run_claimed

WATCH_S = 0.005
QUERY_EVERY_S = 1.0


def work(ctx: WorkerContext, stop: threading.Event | None = None, until_idle: bool = False,
         parent: int | None = None) -> int:
    """Run queued jobs until ``stop`` is set, ``parent`` exits, or (``until_idle``) none is queued; jobs run."""
    ran = 0
    recover_orphans(ctx)
    watch = _Watch(ctx.jobs.url)
    while (stop is None or not stop.is_set()) and (parent is None or os.getppid() == parent):
        job = ctx.jobs.claim_next(ctx.name, ctx.device_name)
        if job is not None:
            run_claimed(ctx, job)
            ran += 1
        elif until_idle:
            return ran
        else:
            watch.wait_for_change(stop)
    return ran


def recover_orphans(ctx: WorkerContext) -> list[str]:
    """Requeue jobs left running by embedded workers of this host whose process is gone; their ids.

    (Celery's jobs come back through the broker instead.)
    """
    host = socket.gethostname()
    dead = []
    for name in ctx.jobs.running_workers():
        worker_host, _, pid = name.rpartition(":")
        if worker_host == host and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            dead.append(name)
    return ctx.jobs.requeue_running(dead) if dead else []


class _Watch:
    """Waits until the job database may have changed: its SQLite files' mtimes, or a period elapsed."""

    def __init__(self, url: str):
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
        self.files = [Path(path + suffix) for suffix in ("", "-wal")] if path else []
        self.seen = self._stamp()

    def _stamp(self) -> tuple[int, ...]:
        return tuple(f.stat().st_mtime_ns if f.exists() else 0 for f in self.files)

    def wait_for_change(self, stop: threading.Event | None) -> None:
        deadline = time.monotonic() + (QUERY_EVERY_S if self.files else 0.05)
        while time.monotonic() < deadline and (stop is None or not stop.is_set()):
            stamp = self._stamp()
            if stamp != self.seen:
                self.seen = stamp
                return
            time.sleep(WATCH_S)
