"""Job records in SQL through SQLModel: SQLite beside the embedded catalogue, or any SQLAlchemy URL.

Every state change is one conditional UPDATE, so concurrent workers and API processes agree:
a queued job is claimed by exactly one worker; a spec identical to a queued, running or
succeeded job is that job (a partial unique index on the spec hash holds under races), unless
the submission is forced. Each row keeps its spec's summary beside the spec, so listings never
read a custom task's lines.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, computed_field
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import defer
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from circat.service.errors import NotFound, StoreUnavailable
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.jobs.schema import upgrade
from circat.service.jobs.spec import DiscoverySpec, SpecSummary
from circat.service.stores.sqlite import ensure_sqlite_dir

AnySpec = DiscoverySpec | EvaluationSpec
"""what a job runs: a discovery, or a functional run (evaluate, extend, transfer)"""


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobRow(SQLModel, table=True):
    """One job as stored."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("jobs_one_per_spec", "spec_hash", unique=True,
                 sqlite_where=sa.text("deduplicated = 1"), postgresql_where=sa.text("deduplicated")),
    )
    id: str = Field(primary_key=True, max_length=32)
    spec: str
    spec_summary: str | None = None
    spec_hash: str = Field(index=True, max_length=64)
    deduplicated: bool = True
    model: str = Field(index=True)
    task: str = Field(index=True)
    method: str = Field(index=True)
    status: str = Field(index=True, max_length=16)
    progress: float | None = None
    message: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    attempts: int = 0
    worker: str | None = None
    device: str | None = None
    submitted_at: datetime = Field(index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    circuit_ids: str = "[]"
    evaluation_ids: str | None = None
    cancel_requested: bool = False


class JobState(BaseModel):
    """Where a job is, how it ended and its circuits: every field of a job record but its spec."""

    model_config = ConfigDict(frozen=True)
    id: str
    spec_hash: str
    status: JobStatus
    progress: float | None
    message: str | None
    error_type: str | None
    error_message: str | None
    attempts: int
    worker: str | None
    device: str | None
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    circuit_ids: list[str]
    evaluation_ids: list[str]
    """a functional job's stored evaluations"""
    cancel_requested: bool

    @computed_field  # type: ignore[prop-decorator]
    @property
    def error(self) -> dict[str, str] | None:
        """Type and message of the error a failed job ended with (never a traceback)."""
        return {"type": self.error_type, "message": self.error_message or ""} if self.error_type else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def circuits(self) -> list[str]:
        """Links to the job's circuits."""
        return [f"/circuits/{c}" for c in self.circuit_ids]

    @staticmethod
    def state_of(row: JobRow) -> dict[str, object]:
        return {"id": row.id, "spec_hash": row.spec_hash, "status": JobStatus(row.status), "progress": row.progress,
                "message": row.message, "error_type": row.error_type, "error_message": row.error_message,
                "attempts": row.attempts, "worker": row.worker, "device": row.device,
                "submitted_at": _utc(row.submitted_at), "started_at": _utc(row.started_at),
                "finished_at": _utc(row.finished_at), "circuit_ids": json.loads(row.circuit_ids),
                "evaluation_ids": json.loads(row.evaluation_ids or "[]"), "cancel_requested": row.cancel_requested}


def spec_of(text: str, discovery: type[BaseModel] = DiscoverySpec) -> Any:
    """A stored spec (or its summary, with ``discovery=SpecSummary``): a functional one by its ``kind``, else a
    discovery."""
    data = json.loads(text)
    return EvaluationSpec.model_validate(data) if "kind" in data else discovery.model_validate(data)


class Job(JobState):
    """A job record as the API and CLI show it: its whole spec, where it is, how it ended, its circuits."""

    spec: DiscoverySpec | EvaluationSpec

    @staticmethod
    def of(row: JobRow) -> Job:
        return Job(spec=spec_of(row.spec), **JobState.state_of(row))


class JobSummary(JobState):
    """A job as listings show it: its spec with a custom task's lines summarised (the whole spec: ``Job``)."""

    spec: SpecSummary | EvaluationSpec  # type: ignore[valid-type]

    @staticmethod
    def of(row: JobRow) -> JobSummary:
        summary = row.spec_summary or spec_of(row.spec).summary().model_dump_json()
        return JobSummary(spec=spec_of(summary, SpecSummary), **JobState.state_of(row))


FINISHED = tuple(s for s in JobStatus if s.finished)
"""the states a job can be pruned in"""


@dataclass(frozen=True)
class JobFilter:
    """Filters for listing jobs; ``None`` means any."""

    status: JobStatus | None = None
    model: str | None = None
    task: str | None = None
    method: str | None = None


def _utc(t: datetime | None) -> datetime | None:
    """Stored times as aware UTC datetimes (SQLite gives them back naive)."""
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class JobStore:
    """Job records in one SQL database."""

    def __init__(self, url: str):
        self.url = url
        ensure_sqlite_dir(url)
        connect = {"check_same_thread": False, "timeout": 30} if url.startswith("sqlite") else {"connect_timeout": 5}
        self.engine = create_engine(url, connect_args=connect, pool_pre_ping=True)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_wal)
        with self._unavailable():
            self.migrated_from = upgrade(self.engine)

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            raise StoreUnavailable(f"job database {self.engine.url.render_as_string()} unreachable: "
                                   f"{exc.orig or exc}") from exc

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._unavailable(), Session(self.engine) as s:
            yield s

    def submit(self, spec: AnySpec, force: bool = False) -> tuple[Job, bool]:
        """A new queued job for ``spec``, or the queued/running/succeeded job of the same spec; ``(job, new)``."""
        digest = spec.spec_hash()
        if not force and (found := self._same_spec(digest)) is not None:
            return found, False
        job_id = "j" + secrets.token_hex(12)
        row = JobRow(id=job_id, spec=spec.canonical_json(), spec_summary=spec.summary().model_dump_json(),
                     spec_hash=digest,
                     deduplicated=not force, model=spec.model, task=spec.task or ",".join(spec.columns),
                     method=str(getattr(spec.method, "value", spec.method)),
                     status=JobStatus.QUEUED, submitted_at=_now())
        try:
            with self._session() as s:
                s.add(row)
                s.commit()
        except IntegrityError:
            found = self._same_spec(digest)
            if found is None:
                raise
            return found, False
        return self.get(job_id), True

    def _same_spec(self, digest: str) -> Job | None:
        with self._session() as s:
            row = s.exec(select(JobRow).where(JobRow.spec_hash == digest, col(JobRow.deduplicated))
                         .order_by(col(JobRow.submitted_at).desc())).first()
            return None if row is None else Job.of(row)

    def get(self, job_id: str) -> Job:
        """The job with this id; ``NotFound`` otherwise."""
        with self._session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"no job with id {job_id!r}")
            return Job.of(row)

    def list(self, flt: JobFilter = JobFilter(), limit: int = 50, offset: int = 0) -> tuple[list[JobSummary], int]:
        """One page of jobs, newest first (their specs summarised), and the total count."""
        wanted = {"status": flt.status.value if flt.status else None, "model": flt.model, "task": flt.task,
                  "method": flt.method}
        conds = [getattr(JobRow, k) == v for k, v in wanted.items() if v is not None]
        with self._session() as s:
            total = s.exec(select(sa.func.count()).select_from(JobRow).where(*conds)).one()
            rows = s.exec(select(JobRow).options(defer(JobRow.spec)).where(*conds)  # type: ignore[arg-type]
                          .order_by(col(JobRow.submitted_at).desc(), col(JobRow.id)).offset(offset).limit(limit)).all()
            return [JobSummary.of(r) for r in rows], int(total)

    def _update(self, job_id: str, when: Sequence[JobStatus], **values: object) -> bool:
        """Set ``values`` on the job if its status is one of ``when``; whether it was."""
        stmt = (sa.update(JobRow).where(col(JobRow.id) == job_id, col(JobRow.status).in_([w.value for w in when]))
                .values(**values))
        with self._session() as s:
            changed = s.exec(stmt).rowcount  # type: ignore[call-overload]
            s.commit()
        return bool(changed)

    def claim(self, job_id: str, worker: str, device: str, redelivered: bool = False) -> bool:
        """Mark a queued job running for ``worker``; a redelivered job may also be re-claimed while running."""
        when = (JobStatus.QUEUED, JobStatus.RUNNING) if redelivered else (JobStatus.QUEUED,)
        return self._update(job_id, when, status=JobStatus.RUNNING.value, worker=worker, device=device,
                            started_at=_now(), attempts=JobRow.attempts + 1, progress=0.0, message="started")

    def claim_next(self, worker: str, device: str) -> Job | None:
        """Claim the oldest queued job, if any (the local worker's loop)."""
        while True:
            with self._session() as s:
                job_id = s.exec(select(JobRow.id).where(JobRow.status == JobStatus.QUEUED.value)
                                .order_by(col(JobRow.submitted_at), col(JobRow.id))).first()
            if job_id is None:
                return None
            if self.claim(job_id, worker, device):
                return self.get(job_id)

    def progress(self, job_id: str, fraction: float | None, message: str) -> bool:
        """Record progress of a running job; ``False`` when cancellation was requested (stop then)."""
        stmt = (sa.update(JobRow).where(col(JobRow.id) == job_id, col(JobRow.status) == JobStatus.RUNNING.value)
                .values(progress=fraction, message=message[:500]).returning(col(JobRow.cancel_requested)))
        with self._session() as s:
            cancel = s.exec(stmt).scalar()  # type: ignore[call-overload]
            s.commit()
        return not cancel

    def succeed(self, job_id: str, circuit_ids: list[str], evaluation_ids: list[str] | None = None) -> bool:
        """A running job finished with these circuits (and, a functional job, these evaluations)."""
        return self._update(job_id, (JobStatus.RUNNING,), status=JobStatus.SUCCEEDED.value, progress=1.0,
                            message="done", circuit_ids=json.dumps(circuit_ids),
                            evaluation_ids=json.dumps(evaluation_ids or []), finished_at=_now())

    def fail(self, job_id: str, error_type: str, message: str) -> bool:
        """A running or queued job failed with this error (type and message, never a traceback)."""
        return self._update(job_id, (JobStatus.QUEUED, JobStatus.RUNNING), status=JobStatus.FAILED.value,
                            error_type=error_type, error_message=message[:4000], finished_at=_now(),
                            deduplicated=False)

    def requeue_running(self, worker_names: list[str]) -> list[str]:
        """Put back in the queue the running jobs of these (dead) workers; their ids."""
        with self._session() as s:
            ids = list(s.exec(select(JobRow.id).where(JobRow.status == JobStatus.RUNNING.value,
                                                      col(JobRow.worker).in_(worker_names))).all())
        return [i for i in ids if self._update(i, (JobStatus.RUNNING,), status=JobStatus.QUEUED.value,
                                               message="requeued: its worker died")]

    def running_workers(self) -> list[str]:
        """Names of the workers that hold running jobs."""
        with self._session() as s:
            return sorted({w for w in s.exec(select(JobRow.worker).where(
                JobRow.status == JobStatus.RUNNING.value)).all() if w})

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now, a running one between steps; ``NotFound`` for an unknown id."""
        job = self.get(job_id)
        if job.status is JobStatus.QUEUED:
            self._update(job_id, (JobStatus.QUEUED,), status=JobStatus.CANCELLED.value, finished_at=_now(),
                         message="cancelled before it started", deduplicated=False)
        elif job.status is JobStatus.RUNNING:
            self._update(job_id, (JobStatus.RUNNING,), cancel_requested=True, message="cancelling")
        return self.get(job_id)

    def cancelled(self, job_id: str) -> bool:
        """End a running job whose cancellation was requested."""
        return self._update(job_id, (JobStatus.RUNNING,), status=JobStatus.CANCELLED.value, finished_at=_now(),
                            message="cancelled", deduplicated=False)

    def prune(self, older_than: timedelta, statuses: Sequence[JobStatus] = FINISHED) -> int:
        """Delete the records of jobs in ``statuses`` (finished ones only) that finished more than ``older_than``
        ago; how many. The catalogue's circuits are not touched."""
        unfinished = [s.value for s in statuses if not s.finished]
        if unfinished:
            raise ValueError(f"only finished jobs can be pruned; not {', '.join(unfinished)}")
        cutoff = _now() - older_than
        stmt = sa.delete(JobRow).where(col(JobRow.status).in_([s.value for s in statuses]),
                                       col(JobRow.finished_at).is_not(None), col(JobRow.finished_at) < cutoff)
        with self._session() as s:
            removed = s.exec(stmt).rowcount  # type: ignore[call-overload]
            s.commit()
        return int(removed)

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` when the database cannot be reached."""
        with self._session() as s:
            s.exec(select(sa.literal(1))).one()

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_wal(conn: object, _: object) -> None:
    cur = conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
