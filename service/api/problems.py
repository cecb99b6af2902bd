"""RFC 9457 ``application/problem+json`` errors for every failure the API can report."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.errors import CircuitInvalid, NotFound, StoreUnavailable
from service.overlap import OverlapError

log = logging.getLogger("circat.api")
MEDIA = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA, headers=headers)


def install(app: FastAPI) -> None:
    """Map catalogue errors, validation errors and the unexpected to problem+json."""

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return problem(404, "Not found", str(exc))

    @app.exception_handler(CircuitInvalid)
    async def invalid(_: Request, exc: CircuitInvalid) -> JSONResponse:
        return problem(422, "Circuit refused", f"{len(exc.problems)} problem(s); nothing was stored",
                       errors=exc.problems)

    @app.exception_handler(OverlapError)
    async def overlap(_: Request, exc: OverlapError) -> JSONResponse:
        return problem(422, "Cannot compare these circuits", str(exc))

    @app.exception_handler(ValueError)
    async def value(_: Request, exc: ValueError) -> JSONResponse:
        return problem(422, "Invalid parameter", str(exc))

    @app.exception_handler(RequestValidationError)
    async def request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        named = ", ".join(e["where"] for e in errors)
        return problem(422, "Invalid request", f"invalid: {named}", errors=errors)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return problem(503, "Catalogue store unavailable", str(exc))

    @app.exception_handler(HTTPException)
    async def http(_: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "Internal error", "the server failed; see its log")
