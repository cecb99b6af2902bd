"""Guards every request passes before a handler runs: body size, time, parameters (keys: ``access``).

The body and timeout guards are plain ASGI middleware, so they hold for every route and
answer with problem+json before any work is done (a body over the limit is never read).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request

from circat.service.api.problems import problem
from circat.service.cancel import cancellable
from circat.service.errors import LimitExceeded
from circat.service.limits import env_name

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuse a body over ``max_bytes`` with 413: by its Content-Length before reading, or while streaming.

    Once refused, the app reads a disconnect and whatever it answers is dropped.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            size = int(declared) if declared.isdigit() else -1
            if size < 0:
                await problem(400, "Malformed request", "Content-Length is not a number")(scope, receive, send)
                return
            if size > self.max_bytes:
                await self._refuse(size, scope, receive, send)
                return
        seen, started, refused = 0, False, False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes and not started:
                refused = True
                await self._refuse(seen, scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if not refused:
                started |= message["type"] == "http.response.start"
                await send(message)

        await self.app(scope, counted, tracked)

    async def _refuse(self, size: int, scope: Scope, receive: Receive, send: Send) -> None:
        exc = LimitExceeded(env_name("max_body_bytes"), size, self.max_bytes, "bytes of request body")
        await limit_problem(exc, 413)(scope, receive, send)


class Timeout:
    """Answer 503 when a request has not started its response within ``seconds``.

    A handler running in a worker thread cannot be stopped from outside: its cancellation token
    (``service.cancel``) is set, so its work stops at the next checkpoint, and what it answers is dropped.
    """

    def __init__(self, app: ASGIApp, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()
        timed_out = False

        async def tracked(message: Message) -> None:
            if timed_out:
                return
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        with cancellable() as token:  # the task (and the threads it starts) inherit the token
            task = asyncio.ensure_future(self.app(scope, receive, tracked))
        waiter = asyncio.ensure_future(started.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=self.seconds, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not done:
            timed_out = True
            token.set()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            task.cancel()
            detail = f"the request took longer than {self.seconds:g} s ({env_name('request_timeout_s')})"
            await problem(503, "Request timed out", detail, limit=env_name("request_timeout_s"))(scope, receive, send)
            return
        await task


def limit_problem(exc: LimitExceeded, status: int = 422) -> Any:
    """The problem+json of a refused limit: names the limit, the value and the maximum."""
    return problem(status, "Limit exceeded", str(exc), limit=exc.limit, value=exc.value, maximum=exc.maximum)


class DuplicateParameter(ValueError):
    """A query parameter that takes one value was given several times."""


def single_valued(multi: frozenset[str]) -> Callable[[Request], None]:
    """A dependency refusing repeated query parameters, except the list-valued ``multi`` ones."""

    def check(request: Request) -> None:
        counts = Counter(k for k, _ in request.query_params.multi_items())
        repeated = sorted(k for k, n in counts.items() if n > 1 and k not in multi)
        if repeated:
            raise DuplicateParameter(
                "query parameter(s) given more than once: " + ", ".join(f"{k!r} ({counts[k]} times)" for k in repeated)
            )

    return check
