"""Printing for the CLI: rich tables for people, plain JSON for scripts, errors for both."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from circat.service.errors import CircuitInvalid

console = Console()
errors = Console(stderr=True)


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _plain(asdict(obj))
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {(k.value if isinstance(k, Enum) else k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


def emit_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (dataclasses, pydantic models, enums and datetimes converted)."""
    sys.stdout.write(json.dumps(_plain(obj), indent=2) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A titled rich table."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in r))
    console.print(t)


def p_text(p: float, samples: int = 0) -> str:
    """A tail probability as people read it (from ``samples`` draws: at most its resolution, 1 / (1 + samples))."""
    if samples and p <= 1.5 / (1 + samples):
        return f"<={1 / (1 + samples):.2g}"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def fail(exc: Exception, as_json: bool) -> NoReturn:
    """Report an error (naming every problem of a refused circuit) and exit 1."""
    lines = str(exc).splitlines() or [type(exc).__name__]
    problems = exc.problems if isinstance(exc, CircuitInvalid) else [ln.strip(" -") for ln in lines[1:]]
    if as_json:
        emit_json({"error": lines[0], "problems": problems})
    else:
        errors.print(f"error: {exc}", style="red", markup=False, highlight=False)
    raise typer.Exit(1)
