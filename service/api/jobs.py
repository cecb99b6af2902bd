"""The job API: submit a discovery spec (202 + Location), follow it, list, cancel.

A submitted spec is checked before anything is stored: its model must be one REST may name
(``service.model_sources``) and its custom task within ``CIRCAT_MAX_TASK_BYTES``. Submissions and
listings answer with the spec summarised (a custom task's lines counted and hashed); ``GET /jobs/{id}``
gives the whole spec.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from circat.service.api.problems import declared
from circat.service.config import Settings
from circat.service.jobs.dispatch import Dispatcher
from circat.service.jobs.spec import DiscoverySpec
from circat.service.jobs.store import AnySpec, Job, JobFilter, JobStatus, JobSummary
from circat.service.limits import MAX_NAME_LENGTH
from circat.service.model_sources import check_rest_model

JOB_ID = "^j[0-9a-f]{24}$"
OptionalName = Annotated[str | None, Query(max_length=MAX_NAME_LENGTH)]


class Submitted(JobSummary):
    """A submitted job; ``new`` is false when an identical spec's job was returned instead."""

    new: bool


def submitted(dispatcher: Dispatcher, settings: Settings, spec: AnySpec, force: bool, response: Response,
              then_check: Callable[[], None] | None = None) -> Submitted:
    """Queue ``spec`` once its model is one REST may name (and ``then_check`` passes): 202 with the job's
    ``Location`` (200 for the job of an identical spec), the spec summarised."""
    check_rest_model(spec.model, settings.model_roots, settings.hub_models)
    if then_check is not None:
        then_check()
    job, new = dispatcher.submit(spec, force)
    response.headers["Location"] = f"/jobs/{job.id}"
    response.status_code = 202 if new else 200
    return Submitted(spec=spec.summary(), new=new, **job.model_dump(exclude={"spec", "error", "circuits"}))


class JobPage(BaseModel):
    """One page of jobs, newest first."""

    items: list[JobSummary]
    total: int
    limit: int
    offset: int


def job_router(dispatcher: Dispatcher, settings: Settings, reads: dict[str, Any], writes: dict[str, Any],
               route_class: type[APIRoute]) -> APIRouter:
    """The /jobs routes over ``dispatcher``'s job database."""
    router = APIRouter(tags=["jobs"], route_class=route_class)
    jobs, max_page = dispatcher.jobs, settings.limits.max_page
    JobId = Annotated[str, Path(pattern=JOB_ID, description="j and 24 hex digits")]

    @router.post("/jobs", status_code=202, response_model=Submitted,
                 responses={200: {"model": Submitted, "description": "the job of an identical spec"},
                            **declared(400, 401, 413, 422, 503)})
    def submit(spec: DiscoverySpec, response: Response,
               force: Annotated[bool, Query(description="a new job even if an identical spec has one")] = False,
               ) -> Submitted:
        return submitted(dispatcher, settings, spec, force, response)

    @router.get("/jobs/{job_id}", response_model=Job, **reads)
    def get(job_id: JobId) -> Job:
        return jobs.get(job_id)

    @router.get("/jobs", response_model=JobPage, **reads)
    def list_jobs(
        status: JobStatus | None = None, model: OptionalName = None, task: OptionalName = None,
        method: OptionalName = None, limit: Annotated[int, Query(ge=1, le=max_page)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> JobPage:
        items, total = jobs.list(JobFilter(status, model, task, method), limit, offset)
        return JobPage(items=items, total=total, limit=limit, offset=offset)

    @router.delete("/jobs/{job_id}", response_model=Job, **writes)
    def cancel(job_id: JobId) -> Job:
        return jobs.cancel(job_id)

    return router

