"""Faithfulness curves of circuits on one SVG plot, edges kept (percent, log scale) against faithfulness.

A discovered edge circuit stores both curves of its scores in ``annotations.evaluation``
(``curve_signed``, ``curve_absolute``: percents, edges, faithfulness); the plot draws each circuit's
curves in one colour, absolute ranking solid and signed ranking dashed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

from circat.service.annotations import evaluation_of
from circat.service.circuit import Circuit

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 560.0, 300.0, 46.0, 34.0, 16.0


@dataclass(frozen=True)
class StoredCurve:
    """One stored faithfulness curve of a circuit."""

    circuit_id: str
    kind: str
    percents: tuple[float, ...]
    faithfulness: tuple[float, ...]


def stored_curves(circuit: Circuit) -> list[StoredCurve]:
    """The faithfulness curves a circuit carries (none for node circuits and imports); its annotations must
    fit their schema (``service.annotations``)."""
    evaluation = evaluation_of(circuit.annotations)
    out = []
    for kind in ("absolute", "signed"):
        curve = getattr(evaluation, f"curve_{kind}", None)
        if curve is not None and curve.percents:
            out.append(StoredCurve(circuit.id, kind, tuple(curve.percents), tuple(curve.faithfulness)))
    return out


def curves_svg(curves: list[StoredCurve], labels: dict[str, str]) -> str:
    """The curves on one plot; ``labels`` names each circuit id in the legend."""
    ids = list(dict.fromkeys(c.circuit_id for c in curves))
    colour = {cid: PALETTE[i % len(PALETTE)] for i, cid in enumerate(ids)}
    low = min((p for c in curves for p in c.percents if p > 0), default=0.1)
    ys = [f for c in curves for f in c.faithfulness if math.isfinite(f)]
    y_lo, y_hi = min([0.0, *ys]), max([1.0, *ys])
    x_of = _log_axis(low, 100.0)
    plot_h = HEIGHT - BOTTOM - TOP

    def y_of(f: float) -> float:
        return TOP + plot_h * (1 - (f - y_lo) / (y_hi - y_lo))

    parts = [_axes(x_of, y_of, low, y_lo, y_hi)]
    for c in curves:
        points = " ".join(f"{x_of(p):.1f},{y_of(f):.1f}" for p, f in zip(c.percents, c.faithfulness, strict=True)
                          if p > 0 and math.isfinite(f))
        dash = "" if c.kind == "absolute" else ' stroke-dasharray="5 3"'
        parts.append(f'<polyline class="curve" data-id="{c.circuit_id}" data-kind="{c.kind}" points="{points}" '
                     f'fill="none" stroke="{colour[c.circuit_id]}" stroke-width="1.6"{dash}>'
                     f'<title>{escape(labels.get(c.circuit_id, c.circuit_id))} ({c.kind})</title></polyline>')
    legend = [f'<text x="{WIDTH + 8:.0f}" y="{TOP + 12 + 14 * i:.0f}" fill="{colour[cid]}">'
              f'{escape(labels.get(cid, cid))}</text>' for i, cid in enumerate(ids)]
    width = WIDTH + 8 + 7 * max((len(labels.get(cid, cid)) for cid in ids), default=0)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="curves" width="{width:.0f}" height="{HEIGHT:.0f}" '
            f'font-family="sans-serif" font-size="10">' + "".join(parts + legend) + "</svg>")


def _log_axis(low: float, high: float) -> Callable[[float], float]:
    span = math.log10(high) - math.log10(low) or 1.0
    return lambda p: LEFT + (WIDTH - LEFT - 10) * (math.log10(p) - math.log10(low)) / span


def _axes(x_of: Callable[[float], float], y_of: Callable[[float], float], low: float, y_lo: float,
          y_hi: float) -> str:
    parts = [f'<line x1="{LEFT}" y1="{y_of(y_lo):.1f}" x2="{WIDTH - 10}" y2="{y_of(y_lo):.1f}" stroke="#444"/>',
             f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y_of(y_lo):.1f}" stroke="#444"/>']
    tick = 10 ** math.floor(math.log10(low))
    while tick <= 100.0 + 1e-9:
        if tick >= low * (1 - 1e-9):
            parts.append(f'<text x="{x_of(tick):.1f}" y="{HEIGHT - BOTTOM + 14:.0f}" '
                         f'text-anchor="middle">{tick:g}%</text>')
        tick *= 10
    for f in (y_lo, 0.0, 0.5, 1.0, y_hi):
        if y_lo <= f <= y_hi:
            parts.append(f'<text x="{LEFT - 4}" y="{y_of(f) + 3:.1f}" text-anchor="end">{f:.2g}</text>'
                         f'<line x1="{LEFT}" y1="{y_of(f):.1f}" x2="{WIDTH - 10}" y2="{y_of(f):.1f}" '
                         f'stroke="#e5e5e5"/>')
    parts.append(f'<text x="{(LEFT + WIDTH) / 2:.0f}" y="{HEIGHT - 4:.0f}" text-anchor="middle">edges kept</text>')
    return "".join(parts)
