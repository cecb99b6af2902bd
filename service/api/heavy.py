"""A bound on concurrent heavy work per API process: reports, matrices, consensus, whole circuits, big bodies.

A heavy request takes a slot in the thread that does the work and gives it back when that work ends
(not when its answer is sent: a timed-out request keeps its slot until its work stops at a cancellation
checkpoint). With every slot taken, the answer is 503 with ``Retry-After`` at once; nothing queues.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from circat.service.cancel import checkpoint
from circat.service.limits import env_name

F = TypeVar("F", bound=Callable[..., Any])
RETRY_AFTER_S = 2


class Busy(Exception):
    """Every heavy slot is taken."""

    def __init__(self, slots: int):
        super().__init__(f"the server is busy with {slots} heavy request(s) ({env_name('max_heavy')}); "
                         f"retry in {RETRY_AFTER_S} s")


class HeavyGate:
    """At most ``slots`` heavy units of work at once."""

    def __init__(self, slots: int):
        self.slots = slots
        self._free = threading.BoundedSemaphore(slots)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the work inside; ``Busy`` at once when none is free."""
        checkpoint()  # answered already: never start
        if not self._free.acquire(blocking=False):
            raise Busy(self.slots)
        try:
            yield
        finally:
            self._free.release()

    def guard(self, endpoint: F) -> F:
        """A sync endpoint whose call holds a slot (in its worker thread)."""

        @functools.wraps(endpoint)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with self.slot():
                return endpoint(*args, **kwargs)

        return guarded  # type: ignore[return-value]
