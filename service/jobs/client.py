"""How the CLI reaches jobs: a running API (``CIRCAT_API_URL``) or the job database directly."""

from __future__ import annotations

from typing import Any, Protocol

from circat.service.config import Settings
from circat.service.errors import NotFound, StoreUnavailable
from circat.service.jobs.dispatch import Dispatcher
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.jobs.store import AnySpec, JobFilter, JobStore


class JobClient(Protocol):
    """Submit, follow, list and cancel jobs; each answer is the job's JSON view."""

    def submit(self, spec: AnySpec, force: bool = False) -> dict[str, Any]: ...
    def get(self, job_id: str) -> dict[str, Any]: ...
    def list(self, flt: JobFilter, limit: int, offset: int) -> dict[str, Any]: ...
    def cancel(self, job_id: str) -> dict[str, Any]: ...


class DirectJobs:
    """Jobs in the configured job database, dispatched as the API would."""

    def __init__(self, settings: Settings):
        self.dispatcher = Dispatcher(JobStore(settings.database_url), settings)

    def submit(self, spec: AnySpec, force: bool = False) -> dict[str, Any]:
        job, new = self.dispatcher.submit(spec, force)
        return job.model_dump(mode="json") | {"new": new}

    def get(self, job_id: str) -> dict[str, Any]:
        return self.dispatcher.jobs.get(job_id).model_dump(mode="json")

    def list(self, flt: JobFilter, limit: int, offset: int) -> dict[str, Any]:
        items, total = self.dispatcher.jobs.list(flt, limit, offset)
        return {"items": [j.model_dump(mode="json") for j in items], "total": total}

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.dispatcher.jobs.cancel(job_id).model_dump(mode="json")


class ApiJobs:
    """Jobs through a running API, with the bearer key when one is set."""

    def __init__(self, settings: Settings):
        import httpx

        assert settings.api_url is not None
        key = settings.api_key or settings.read_key
        self.http = httpx.Client(base_url=settings.api_url.rstrip("/"), timeout=30,
                                 headers={"Authorization": f"Bearer {key}"} if key else {})

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        import httpx

        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"API at {self.http.base_url} unreachable: {exc}") from exc
        if r.status_code == 404:
            raise NotFound(r.json().get("detail", "not found"))
        if r.status_code >= 400:
            body = r.json() if r.headers.get("content-type", "").endswith("json") else {}
            raise ValueError(f"{r.status_code}: {body.get('detail', r.text)} {body.get('errors') or ''}".strip())
        return r.json()

    def submit(self, spec: AnySpec, force: bool = False) -> dict[str, Any]:
        path = "/evaluations" if isinstance(spec, EvaluationSpec) else "/jobs"
        return self._call("POST", path, params={"force": force}, content=spec.canonical_json(),
                          headers={"content-type": "application/json"})

    def get(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}")

    def list(self, flt: JobFilter, limit: int, offset: int) -> dict[str, Any]:
        params = {k: v for k, v in {"status": flt.status, "model": flt.model, "task": flt.task,
                                    "method": flt.method, "limit": limit, "offset": offset}.items() if v is not None}
        return self._call("GET", "/jobs", params=params)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/jobs/{job_id}")


def job_client(settings: Settings | None = None) -> JobClient:
    """The API client when ``CIRCAT_API_URL`` is set, else direct access to the job database."""
    settings = settings or Settings.from_env()
    return ApiJobs(settings) if settings.api_url else DirectJobs(settings)
