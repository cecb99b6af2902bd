"""Component importance in the report: per component of a circuit the faithfulness lost when it alone is removed,
per component outside it the gain when it alone is added (the largest ``TOP_ADDED``), and the layer sweeps.

Tables with bars scaled to the largest absolute effect of the table (red: lost, blue: gained), so a reader sees
at a glance which components carry the task and what is missing from the circuit.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from circat.service.effects import EffectsView

TOP_ADDED = 20
BAR_PX = 120


def components_section(views: Sequence[EffectsView]) -> str:
    """The report's section for component effects (empty when there are none)."""
    if not views:
        return ""
    return ("<h2>Inside the circuit: component importance</h2><p>Faithfulness lost when a component of the circuit "
            "is removed alone, gained when a component outside it is added alone, and with whole layers of heads "
            "added (the heads of layer L; the heads of layers 0..L).</p>" + "".join(_view(v) for v in views))


def _view(v: EffectsView) -> str:
    e = v.effects
    removed = sorted(e.removed.items(), key=lambda kv: -abs(kv[1]))
    added = sorted(e.added.items(), key=lambda kv: -abs(kv[1]))[:TOP_ADDED]
    sweeps = "".join(f"<tr><td>{layer}</td><td>{e.layer_heads[layer]:.3f}</td><td>{e.heads_upto[layer]:.3f}</td></tr>"
                     for layer in e.layer_heads)
    return (f'<div class="components"><h3>{escape(v.expression)} on {escape(v.model)} / {escape(v.task)}</h3>'
            f"<p>faithfulness {e.base:.3f} ({escape(v.metric)})</p><div class=\"figures\">"
            + _bars("removed alone: faithfulness lost", removed, "drop")
            + _bars(f"added alone: faithfulness gained (top {TOP_ADDED})", added, "gain")
            + '<table class="sweeps"><tr><th>layer L</th><th>+ heads of L</th><th>+ heads of 0..L</th></tr>'
            + sweeps + "</table></div></div>")


def _bars(title: str, rows: list[tuple[str, float]], column: str) -> str:
    if not rows:
        return f"<table><tr><th>{escape(title)}</th></tr><tr><td>none</td></tr></table>"
    scale = max(abs(x) for _, x in rows) or 1.0
    body = "".join(
        f'<tr><td>{escape(name)}</td><td>{x:+.3f}</td><td><span class="bar" style="width:'
        f'{BAR_PX * abs(x) / scale:.0f}px;background:{"#b2182b" if (x > 0) == (column == "drop") else "#2166ac"}">'
        "</span></td></tr>" for name, x in rows)
    return (f'<table class="effects" data-group="{column}"><tr><th colspan="3">{escape(title)}</th></tr>'
            f"<tr><th>component</th><th>{column}</th><th></th></tr>{body}</table>")
