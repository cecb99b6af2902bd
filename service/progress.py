"""One progress callback for long work: the CLI's bars and the job records both consume it.

A ``Progress`` is called with (steps done, total steps or ``None`` when unknown, a message).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Progress = Callable[[int, int | None, str], None]


def silent(done: int, total: int | None, message: str) -> None:
    """A progress callback that shows nothing."""


@contextmanager
def console_progress(title: str, enabled: bool = True) -> Iterator[Progress]:
    """A bar on a terminal; plain lines on stderr when it is not one; nothing when disabled."""
    if not enabled:
        yield silent
        return
    if not sys.stderr.isatty():
        last: list[str] = []

        def line(done: int, total: int | None, message: str) -> None:
            text = f"{title}: {done}/{total if total else '?'} {message}"
            if last != [text]:
                last[:] = [text]
                print(text, file=sys.stderr, flush=True)

        yield line
        return
    from rich.progress import Progress as Bar

    with Bar(transient=False) as bar:
        task = bar.add_task(title, total=None)

        def tick(done: int, total: int | None, message: str) -> None:
            bar.update(task, completed=done, total=total, description=f"{title} {message}".strip())

        yield tick
