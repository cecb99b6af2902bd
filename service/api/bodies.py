"""JSON request bodies: read within the route's size limit, bounded in values, parsed and validated off the event loop.

FastAPI reads, parses and validates a body on the event loop before a handler runs: one 255 MB body of tiny
objects held the loop for 30 s and took 6.5 GB. Here every route with a body gets ``BodyRoute``'s request:
its bytes are read up to the route's limit (413 beyond, by Content-Length before reading), the JSON values are
counted from its separators before parsing (413 past ``CIRCAT_MAX_JSON_VALUES``: the memory a parse can take
is bounded), and the parse and the model's validation run in a worker thread, bodies over 1 MiB one heavy slot
each. FastAPI then sees the validated model instance and only passes it on. Malformed JSON is 400, content the
model refuses 422 (``body.<field>`` locations, as FastAPI names them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping
from contextlib import nullcontext
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from circat.service.api.heavy import HeavyGate
from circat.service.errors import LimitExceeded
from circat.service.limits import Limits, env_name

BIG_BODY = 1 << 20
"""Bodies over this size take a heavy slot while they are parsed and validated."""
T = TypeVar("T", bound=BaseModel)


class BodyRefused(HTTPException):
    """A body refused before its model saw it: malformed (400), over a limit (413), or invalid (422)."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, str]] | None = None,
                 limit: LimitExceeded | None = None):
        super().__init__(status, detail)
        self.errors, self.limit = errors, limit

    @staticmethod
    def over(exc: LimitExceeded) -> BodyRefused:
        return BodyRefused(413, str(exc), limit=exc)


def count_values(raw: bytes) -> int:
    """An upper bound on the JSON values a body holds (separators and openings; those inside strings count too)."""
    return raw.count(b",") + raw.count(b"{") + raw.count(b"[") + 1


def parse_body(raw: bytes, model: type[T], max_values: int) -> T:
    """``raw`` as ``model``: bounded in values, parsed, validated; ``BodyRefused`` naming what is wrong."""
    values = count_values(raw)
    if values > max_values:
        raise BodyRefused.over(LimitExceeded(env_name("max_json_values"), values, max_values, "JSON values in a body"))
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise BodyRefused(400, "the body is not valid UTF-8") from None
    except RecursionError:
        raise BodyRefused(400, "the JSON body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise BodyRefused(400, f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{"where": ".".join(str(p) for p in ("body", *e["loc"])), "problem": e["msg"]} for e in exc.errors()]
        raise BodyRefused(422, f"invalid: {', '.join(e['where'] for e in errors)}", errors) from None


class BoundedJsonRequest(Request):
    """A request whose body is read within ``max_bytes`` and whose JSON is parsed and validated in a thread."""

    def __init__(self, request: Request, model: type[BaseModel], limit: str, limits: Limits, gate: HeavyGate):
        super().__init__(request.scope, request.receive)
        self.model, self.limit, self.limits, self.gate = model, limit, limits, gate
        self.max_bytes: int = getattr(limits, limit)

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise self._too_large(int(declared))
            chunks, seen = [], 0
            async for chunk in self.stream():
                seen += len(chunk)
                if seen > self.max_bytes:
                    raise self._too_large(seen)
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            raw = await self.body()
            with self.gate.slot() if len(raw) > BIG_BODY else nullcontext():
                self._json = await run_in_threadpool(parse_body, raw, self.model, self.limits.max_json_values)
        return self._json

    def _too_large(self, size: int) -> BodyRefused:
        return BodyRefused.over(LimitExceeded(env_name(self.limit), size, self.max_bytes, "bytes of request body"))


def body_route(limits: Limits, gate: HeavyGate, body_limits: Mapping[type[BaseModel], str]) -> type[APIRoute]:
    """The route class of an app: a body of ``model`` is bounded by the limit ``body_limits[model]`` names
    (by default ``max_body_bytes``)."""

    class BodyRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            model = self.body_field.field_info.annotation if self.body_field is not None else None
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                return handler
            limit = body_limits.get(model, "max_body_bytes")

            async def bounded(request: Request) -> Response:
                return await handler(BoundedJsonRequest(request, model, limit, limits, gate))

            return bounded

    return BodyRoute
