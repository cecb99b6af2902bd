"""RFC 9457 ``application/problem+json`` errors for every failure the API can report.

Also what OpenAPI declares of them: ``declared(*statuses)`` gives an operation's error
responses, all with the ``Problem`` schema and the problem+json media type.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from circat.service.api.bodies import BodyRefused
from circat.service.api.heavy import RETRY_AFTER_S, Busy
from circat.service.cancel import Cancelled
from circat.service.errors import CircuitInvalid, LimitExceeded, NotFound, SchemaMismatch, StoreUnavailable
from circat.service.overlap import OverlapError

log = logging.getLogger("circat.api")
MEDIA = "application/problem+json"
TOO_LARGE = frozenset({"CIRCAT_MAX_BODY_BYTES", "CIRCAT_MAX_SPEC_BYTES", "CIRCAT_MAX_JSON_VALUES", "CIRCAT_MAX_ITEMS"})


class Problem(BaseModel):
    """An RFC 9457 problem: ``errors`` lists every problem of a refused input; limits name themselves."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[Any] | None = None
    limit: str | None = None
    value: int | None = None
    maximum: int | None = None


class ProblemResponse(JSONResponse):
    """problem+json, rendered ASCII-only so that any echoed input encodes."""

    media_type = MEDIA

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return ProblemResponse(body, status_code=status, headers=headers)


_DESCRIPTIONS = {
    400: "Malformed request (body not JSON, not UTF-8, or nested too deeply)",
    401: "Missing or wrong bearer key",
    404: "No such circuit, model or job",
    413: "Request body or circuit over a configured limit",
    422: "Invalid parameters or body, a refused circuit (every problem named), or a limit exceeded",
    503: "Store unreachable, the server busy with heavy requests (Retry-After), or the request timed out",
}


def declared(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for an operation's error statuses."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {s: {"description": _DESCRIPTIONS[s], "content": {MEDIA: {"schema": schema}}} for s in statuses}


def add_problem_schema(app: FastAPI, bearer: bool = False) -> None:
    """Register the ``Problem`` schema in the app's OpenAPI components; with ``bearer``, the bearer scheme
    and, on every operation that declares 401, that it needs it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            components = spec.setdefault("components", {})
            components.setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
            if bearer:
                components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                for ops in spec["paths"].values():
                    for op in ops.values():
                        if "401" in op.get("responses", {}):
                            op["security"] = [{"bearer": []}]
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _allowed(request: Request) -> str:
    """Every method some route serves at this path (for a truthful 405 ``Allow``; HEAD wherever GET is)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        for method in getattr(route, "methods", None) or ():
            match, _ = route.matches({**request.scope, "method": method})
            if match is Match.FULL:
                methods.add(method)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def _body_problem(exc: BodyRefused) -> JSONResponse:
    if exc.limit is not None:
        return problem(**item_problem(exc.limit))
    if exc.status_code == 400:
        return problem(400, "Malformed request", str(exc.detail))
    return problem(422, "Invalid request", str(exc.detail), errors=exc.errors)


def _validation_errors(errors: Sequence[Any]) -> tuple[str, list[dict[str, str]]]:
    """Pydantic errors as a detail naming where each is and a list of ``{where, problem}``."""
    listed = [{"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in errors]
    return f"invalid: {', '.join(e['where'] for e in listed)}", listed


def item_problem(exc: Exception) -> dict[str, Any]:
    """The problem (status, title, detail, errors, ...) of a refused circuit: one item of a batch, or a request."""
    if isinstance(exc, ValidationError):
        detail, errors = _validation_errors(exc.errors())
        return {"status": 422, "title": "Invalid circuit document", "detail": detail, "errors": errors}
    if isinstance(exc, CircuitInvalid):
        return {"status": 422, "title": "Circuit refused",
                "detail": f"{len(exc.problems)} problem(s); nothing was stored", "errors": exc.problems}
    if isinstance(exc, LimitExceeded):
        return {"status": 413 if exc.limit in TOO_LARGE else 422, "title": "Limit exceeded", "detail": str(exc),
                "limit": exc.limit, "value": exc.value, "maximum": exc.maximum}
    return {"status": 422, "title": "Circuit refused", "detail": str(exc)}


def install(app: FastAPI, bearer: bool = False) -> None:
    """Map catalogue errors, validation errors and the unexpected to problem+json."""
    add_problem_schema(app, bearer)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return problem(404, "Not found", str(exc))

    @app.exception_handler(CircuitInvalid)
    @app.exception_handler(LimitExceeded)
    async def refused(_: Request, exc: CircuitInvalid | LimitExceeded) -> JSONResponse:
        return problem(**item_problem(exc))

    @app.exception_handler(OverlapError)
    async def overlap(_: Request, exc: OverlapError) -> JSONResponse:
        return problem(422, "Cannot compare these circuits", str(exc))

    @app.exception_handler(ValueError)
    async def value(_: Request, exc: ValueError) -> JSONResponse:
        return problem(422, "Invalid parameter", str(exc))

    @app.exception_handler(RequestValidationError)
    async def request(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = _validation_errors(exc.errors())
        return problem(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return problem(503, "Catalogue store unavailable", str(exc))

    @app.exception_handler(SchemaMismatch)
    async def newer_schema(_: Request, exc: SchemaMismatch) -> JSONResponse:
        return problem(503, "Catalogue schema newer than this server", str(exc))

    @app.exception_handler(Busy)
    async def busy(_: Request, exc: Busy) -> JSONResponse:
        return problem(503, "Server busy", str(exc), headers={"Retry-After": str(RETRY_AFTER_S)},
                       limit="CIRCAT_MAX_HEAVY")

    @app.exception_handler(Cancelled)
    async def cancelled(_: Request, exc: Cancelled) -> JSONResponse:
        return problem(503, "Request timed out", str(exc))  # its answer was already sent; this one is dropped

    @app.exception_handler(HTTPException)
    async def http(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc, BodyRefused):
            return _body_problem(exc)
        if exc.status_code == 405:
            return problem(405, "Method not allowed", f"{request.method} is not served here",
                           headers={"Allow": _allowed(request)})
        return problem(exc.status_code, str(exc.detail), str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "Internal error", "the server failed; see its log")
