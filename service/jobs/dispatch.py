"""Submitting a job: its record in the job database, then its message to the workers.

With ``CIRCAT_BROKER_URL`` set, a message goes to the Celery queue (any number of workers, on any
machine). Without it, nothing is sent: the embedded worker takes queued jobs from the database.
Celery is imported only when a broker is configured, so the API starts light.
"""

from __future__ import annotations

from typing import Any

from circat.service.config import Settings
from circat.service.errors import StoreUnavailable
from circat.service.jobs.store import AnySpec, Job, JobStore

QUEUE = "circat"
TASK_NAME = "circat.run_job"


def celery_settings(broker_url: str, job_time_limit_s: float = 6 * 3600) -> dict[str, Any]:
    """Celery settings for long GPU jobs (shared by the dispatcher and the worker app)."""
    return {
        "broker_url": broker_url,
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "task_default_queue": QUEUE,
        "task_soft_time_limit": job_time_limit_s,
        "task_time_limit": job_time_limit_s + 60,
        "broker_transport_options": {"visibility_timeout": int(job_time_limit_s + 600)},
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }


class Dispatcher:
    """Records jobs and hands them to the configured workers."""

    def __init__(self, jobs: JobStore, settings: Settings):
        self.jobs = jobs
        self.limits = settings.limits
        self.broker_url = settings.broker_url
        self._celery: Any = None
        if self.broker_url:
            from celery import Celery

            self._celery = Celery("circat-dispatch")
            self._celery.conf.update(celery_settings(self.broker_url, settings.job_time_limit_s))

    def submit(self, spec: AnySpec, force: bool = False) -> tuple[Job, bool]:
        """Record a job (or find the job of the same spec) and send a new one to the workers; a custom task over
        ``CIRCAT_MAX_TASK_BYTES`` is refused before anything is stored."""
        self.limits.check_task_bytes(spec.task_bytes())
        job, new = self.jobs.submit(spec, force)
        if new and self._celery is not None:
            try:
                self._celery.send_task(TASK_NAME, args=[job.id], queue=QUEUE)
            except Exception as exc:
                self.jobs.fail(job.id, "BrokerUnavailable", f"could not queue the job: {exc}")
                raise StoreUnavailable(f"broker {self.broker_url} unreachable: {exc}") from exc
        return job, new

    def ping_broker(self) -> None:
        """Raise ``StoreUnavailable`` when a configured broker cannot be reached."""
        if self._celery is None:
            return
        try:
            with self._celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:
            raise StoreUnavailable(f"broker {self.broker_url} unreachable: {exc}") from exc
