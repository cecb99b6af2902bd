"""The transfer matrix as an SVG heatmap: circuits (rows) on tasks (columns), each cell a stored evaluation.

Rows are the report's circuits and the expressions over them that have evaluations; a row's own task (the
task its circuit was found for) is outlined. Values are coloured as the Jaccard heatmap (0 white, 1 dark
blue; above 1 as 1) and written in each cell; a cell's hover title gives its 95 % bootstrap interval where
its record has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

from circat.service.report.heatmap import CELL, colour
from circat.service.stores.base import EvaluationRecord


@dataclass(frozen=True)
class TransferView:
    """One mode's matrix: row labels, columns, values (``nan``: not evaluated) and each row's own task."""

    mode: str
    rows: list[str]
    tasks: list[str]
    values: np.ndarray
    own: list[str | None]
    low: np.ndarray
    """each cell's interval (``nan``: none)"""
    high: np.ndarray


def newest_records(records: Sequence[EvaluationRecord], mode: str) -> dict[tuple[str, str], EvaluationRecord]:
    """The newest record of each (expression, task) in ``mode`` (``records`` newest first)."""
    cells: dict[tuple[str, str], EvaluationRecord] = {}
    for r in records:
        if r.mode == mode:
            cells.setdefault((r.expression, r.task), r)
    return cells


def newest_cells(records: Sequence[EvaluationRecord], mode: str) -> dict[tuple[str, str], float]:
    """The value of each (expression, task) in ``mode``, from the newest of its records (``records`` newest first)."""
    return {key: r.value for key, r in newest_records(records, mode).items()}


def transfer_views(records: Sequence[EvaluationRecord], labels: dict[str, str],
                   own_task: dict[str, str]) -> list[TransferView]:
    """The keep and knockout matrices of ``records`` (newest record per cell), rows labelled by ``labels``
    (a circuit id's label; ids inside an expression are replaced by their labels too)."""
    views = []
    for mode in ("keep", "knockout"):
        cells = newest_records(records, mode)
        if not cells:
            continue
        order = {cid: i for i, cid in enumerate(labels)}  # the report's circuits first, in its order
        rows = sorted(dict.fromkeys(e for e, _ in cells), key=lambda e: (order.get(e, len(order)), e))
        tasks = sorted({t for _, t in cells})
        low, high = (_grid(cells, rows, tasks, bound) for bound in ("low", "high"))
        views.append(TransferView(mode, [_label(e, labels) for e in rows], tasks, _grid(cells, rows, tasks, "value"),
                                  [own_task.get(e) for e in rows], low, high))
    return views


def _grid(cells: dict[tuple[str, str], EvaluationRecord], rows: list[str], tasks: list[str], field: str) -> np.ndarray:
    """One field of the records per (row, task); ``nan`` where there is no record or the field is None."""
    return np.array([[np.nan if (r := cells.get((e, t))) is None or getattr(r, field) is None else getattr(r, field)
                      for t in tasks] for e in rows], dtype=float)


def _label(expression: str, labels: dict[str, str]) -> str:
    for cid, label in labels.items():
        expression = expression.replace(cid, label)
    return expression


def transfer_svg(view: TransferView) -> str:
    """The heatmap of one view, its diagonal (own tasks) outlined."""
    what = "faithfulness, each circuit kept alone" if view.mode == "keep" else "share left, each circuit knocked out"
    left, top = 12 + 6.5 * max((len(s) for s in view.rows), default=0), 70.0
    parts = [f'<text x="4" y="14" font-size="12">Transfer: {what}</text>']
    for c, task in enumerate(view.tasks):
        x = left + c * CELL + CELL / 2
        parts.append(f'<text x="{x:.1f}" y="{top - 6:.0f}" transform="rotate(-40 {x:.1f} {top - 6:.0f})">'
                     f'{escape(task)}</text>')
    for r, label in enumerate(view.rows):
        y = top + r * CELL
        parts.append(f'<text x="{left - 4:.0f}" y="{y + CELL / 2 + 3:.1f}" text-anchor="end">{escape(label)}</text>')
        for c, task in enumerate(view.tasks):
            parts.append(_cell(left + c * CELL, y, float(view.values[r, c]), f"{label} on {task}",
                               view.own[r] == task, (float(view.low[r, c]), float(view.high[r, c]))))
    width, height = left + len(view.tasks) * CELL + 70, top + len(view.rows) * CELL + 10  # room for the last label
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="transfer" data-mode="{view.mode}" width="{width:.0f}" '
            f'height="{height:.0f}" font-family="sans-serif" font-size="10">' + "".join(parts) + "</svg>")


def _cell(x: float, y: float, v: float, what: str, own: bool, interval: tuple[float, float]) -> str:
    text = "n/a" if np.isnan(v) else f"{v:.2f}"
    spread = "" if np.isnan(interval[0]) else f" [{interval[0]:.2f}, {interval[1]:.2f}]"
    edge = ' stroke="#000000" stroke-width="2" class="cell own"' if own else ' class="cell"'
    out = (f'<rect x="{x:.1f}" y="{y:.1f}" width="{CELL - 1}" height="{CELL - 1}" fill="{colour(v)}"{edge}>'
           f"<title>{escape(what)}: {text}{spread}</title></rect>")
    if not np.isnan(v):
        ink = "#ffffff" if v > 0.6 else "#222222"
        out += (f'<text x="{x + CELL / 2 - 0.5:.1f}" y="{y + CELL / 2 + 3:.1f}" text-anchor="middle" font-size="8" '
                f'fill="{ink}">{text}</text>')
    return out
