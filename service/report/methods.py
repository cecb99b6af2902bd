"""The methods leaderboard of a report (``circat report --methods``): per (model, task), each circuit's method with
its faithfulness, size, CPR, CMD and faithfulness at 1, 2, 5 and 10 % of edges, and their curves on one plot."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from html import escape

from circat.service.annotations import evaluation_of, faithfulness_interval, problems
from circat.service.bootstrap import with_interval
from circat.service.circuit import Circuit
from circat.service.report.curves import curves_svg, stored_curves

PERCENTS = (1, 2, 5, 10)


@dataclass(frozen=True)
class MethodRow:
    """One circuit as the leaderboard shows it."""

    circuit_id: str
    method: str
    faithfulness: str
    nodes: int
    edges: int | None
    cpr: float | None
    cmd: float | None
    at: dict[float, float | None]
    """faithfulness of the top edges by |score| at each of ``PERCENTS`` (edge methods with stored curves)"""


def method_label(c: Circuit) -> str:
    """The method with its variant: EAP-IG's point set when not MIB's inputs, GIM gradients."""
    p = c.provenance.params
    label = c.provenance.method
    if p.get("ig_points") not in (None, "mib"):
        label += f" ({p['ig_points']})"
    return label + (" + GIM" if p.get("gradient") == "gim" else "")


def method_row(c: Circuit) -> MethodRow:
    """The leaderboard row of ``c``."""
    p = c.provenance.params
    curve = None if problems(c.annotations) else getattr(evaluation_of(c.annotations), "curve_absolute", None)
    points = dict(zip(curve.percents, curve.faithfulness, strict=True)) if curve is not None else {}
    return MethodRow(c.id, method_label(c), with_interval(c.provenance.faithfulness,
                                                          faithfulness_interval(c.annotations)) or "-",
                     c.n_nodes, c.n_edges if c.has_edges else None, p.get("cpr"), p.get("cmd"),
                     {pc: points.get(pc) for pc in PERCENTS})


def methods_section(circuits: list[Circuit], labels: dict[str, str]) -> str:
    """Per (model, task), the leaderboard table and the faithfulness curves of its circuits."""
    groups: dict[tuple[str, str], list[Circuit]] = defaultdict(list)
    for c in circuits:
        groups[(c.provenance.model, c.provenance.task)].append(c)
    parts = ["<h2>Methods</h2><p>Per model and task: each circuit's method, faithfulness [95 % bootstrap interval], "
             "size, CPR and CMD (MIB's areas under the signed and absolute curves), and the faithfulness of its "
             "top edges by |score| at 1, 2, 5 and 10 % of edges.</p>"]
    head = "".join(f"<th>{escape(h)}</th>" for h in ("circuit", "method", "faithfulness", "nodes", "edges", "CPR",
                                                       "CMD", *(f"f @ {p} %" for p in PERCENTS)))
    for (model, task), group in groups.items():
        rows = []
        for row in sorted((method_row(c) for c in group), key=lambda r: (r.cpr is None, -(r.cpr or 0.0))):
            cells = [labels.get(row.circuit_id, row.circuit_id), row.method, row.faithfulness, str(row.nodes),
                     *map(number_text, (row.edges, row.cpr, row.cmd, *(row.at[p] for p in PERCENTS)))]
            rows.append("<tr>" + "".join(f"<td>{escape(x)}</td>" for x in cells) + "</tr>")
        curves = [curve for c in group if not problems(c.annotations) for curve in stored_curves(c)]
        plot = curves_svg(curves, {c.id: method_label(c) for c in group}) if curves else ""
        parts.append(f"<h3>{escape(model)} / {escape(task)}</h3><table class=\"methods\"><tr>{head}</tr>"
                     + "".join(rows) + f"</table>{plot}")
    return "".join(parts)


def number_text(value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3f}"
