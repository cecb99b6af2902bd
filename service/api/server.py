"""How ``circat serve`` runs uvicorn: bounded connections and a deadline for each request's headers.

uvicorn closes idle keep-alive connections, but it waits forever for the first request of a connection,
and for headers sent a byte at a time: 200 silent sockets stayed open. ``BoundedH11Protocol`` closes a
connection whose request headers have not all arrived within ``CIRCAT_HEADER_TIMEOUT_S`` of its opening
or of its previous answer. ``CIRCAT_MAX_CONNECTIONS`` is uvicorn's concurrency limit: past it, 503.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from circat.service.limits import Limits


@cache
def header_timeout_s() -> float:
    """The configured deadline for a request's headers (read once per process)."""
    return Limits.from_env().header_timeout_s


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for every request's headers."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle and self._deadline is not None:  # a request's headers are complete
            self._deadline.cancel()
            self._deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(header_timeout_s(), self._late)

    def _late(self) -> None:
        self._deadline = None
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(limits: Limits) -> dict[str, Any]:
    """uvicorn settings of every ``circat serve``."""
    return {"http": BoundedH11Protocol, "limit_concurrency": limits.max_connections, "timeout_keep_alive": 5}
