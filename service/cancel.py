"""Cooperative cancellation of a request's work once it has been answered (timed out).

The API's timeout guard gives each request a token in a context variable, which worker threads inherit;
long loops (the report, the overlap matrix, loading many circuits) call ``checkpoint()`` between units of
work, so work whose answer was already sent stops there instead of running on. Outside a request
(the CLI, jobs) there is no token and ``checkpoint()`` does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_token: ContextVar[threading.Event | None] = ContextVar("circat_cancel", default=None)


class Cancelled(Exception):
    """The request this work was for has already been answered."""


def checkpoint() -> None:
    """Raise ``Cancelled`` when the current request's token is set."""
    token = _token.get()
    if token is not None and token.is_set():
        raise Cancelled("the request was answered before its work finished")


@contextmanager
def cancellable() -> Iterator[threading.Event]:
    """A fresh token for the work started inside (set it to cancel that work)."""
    token = threading.Event()
    reset = _token.set(token)
    try:
        yield token
    finally:
        _token.reset(reset)
