"""A circuit as an SVG diagram on its model's layered grid (``service.report.layout``).

Edges are drawn with width by |score| and colour by what they do for the task where scores exist:
blue when the edge supports the answer (ablating it harms the circuit's metric: a negative score for
the logit and probability differences, a positive one for KL), orange when it works against it, grey
when unscored; a circuit whose metric is unknown is coloured by the raw sign (purple positive, green
negative) and its legend says so. The destination port is the dash pattern (q solid, k dashed, v dotted;
MLP and logits inputs solid); at most ``top_edges`` edges are drawn, the largest |score| first. The node
view draws components only, sized by |score| or, when given, by support. Components named in ``shared``
get a gold ring. Each kept component is shaded by its frequency across a resampled run's resamples when
there is one, else by its |score| when it has one (opaque: in every resample, or the largest score).
Every kept component is one ``<g class="node" data-name=...>`` with its name written under it and a
``<title>`` that shows on hover; other slots are grey dots named on hover. The caption (what is drawn, how
many edges are hidden, the legend) wraps to the diagram's width.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from html import escape

import numpy as np

from circat.service.circuit import Circuit
from circat.service.graph import ModelGraph
from circat.service.report.layout import Placement, place
from circat.service.types import Metric, NodeKind, Port

DEFAULT_TOP_EDGES = 300
KIND_COLOUR = {NodeKind.INPUT: "#555555", NodeKind.ATTENTION: "#2f6db5", NodeKind.MLP: "#d9822b",
               NodeKind.LOGITS: "#3a9e5a"}
DASH = {Port.Q: "", Port.K: "5 3", Port.V: "1.5 2.5", Port.MLP: "", Port.LOGITS: ""}
SUPPORTS, OPPOSES, UNSCORED = "#2166ac", "#e66101", "#8c8c8c"
POSITIVE, NEGATIVE = "#7b3294", "#1b7837"
"""colours by raw sign, for a circuit whose metric (and so the meaning of a sign) is unknown"""
SHARED_RING = "#e0a800"
CAPTION_SIZE = 10.0
CHAR_WIDTH = 0.6
"""an upper bound of the average glyph width of the caption's sans-serif text, in ems"""
LINE = 13.0
MIN_WIDTH = 320.0
"""a diagram is at least this wide, so that a small model's caption does not wrap into a column"""


@dataclass(frozen=True)
class DiagramOptions:
    """What a diagram shows: how many edges at most, node view or edges, which components to ring."""

    top_edges: int = DEFAULT_TOP_EDGES
    node_view: bool = False
    shared: frozenset[str] = frozenset()
    support: dict[str, int] | None = None
    frequency: dict[str, float] | None = None
    """a resampled run's circuit: each component's share of the resamples holding it, drawn as its opacity"""


def circuit_svg(circuit: Circuit, options: DiagramOptions = DiagramOptions()) -> str:
    """The diagram of ``circuit`` as a standalone SVG document."""
    graph = circuit.graph
    at = place(graph)
    edges = np.zeros(0, dtype=np.int64) if options.node_view or not circuit.has_edges else _top_edges(circuit, options)
    hidden = 0 if options.node_view or not circuit.has_edges else circuit.n_edges - len(edges)
    support = support_sign(circuit.provenance.metric)
    parts = [_edge_svg(graph, at, circuit, edges, support)] if len(edges) else []
    parts += _nodes_svg(graph, at, circuit, options)
    width = max(at.width, MIN_WIDTH)
    lines = caption_lines(circuit, options, len(edges), hidden, support, width)
    height = at.height + LINE * len(lines) + 6
    caption = "".join(f'<text class="note" x="4" y="{at.height + LINE * (k + 1):.0f}" font-size="{CAPTION_SIZE:g}">'
                      f"{escape(line)}</text>" for k, line in enumerate(lines))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="circuit" data-id="{circuit.id}" '
            f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'font-family="sans-serif" font-size="9">{caption}' + "".join(parts) + "</svg>")


def support_sign(metric: str | None) -> float | None:
    """The sign of a score whose edge supports the answer under ``metric`` (ablating it harms the metric);
    ``None`` when the metric is not known."""
    try:
        return Metric(metric).harm_sign if metric else None
    except ValueError:
        return None


def _top_edges(circuit: Circuit, options: DiagramOptions) -> np.ndarray:
    """Indices of the in-circuit edges drawn: the ``top_edges`` largest |score| (unscored last)."""
    assert circuit.edge_mask is not None and circuit.edge_scores is not None
    idx = np.flatnonzero(circuit.edge_mask)
    magnitude = np.nan_to_num(np.abs(circuit.edge_scores[idx]), nan=-1.0)
    order = np.lexsort((idx, -magnitude))
    return idx[order[:options.top_edges]]


def _edge_svg(graph: ModelGraph, at: Placement, circuit: Circuit, edges: np.ndarray, support: float | None) -> str:
    assert circuit.edge_scores is not None
    scores = circuit.edge_scores[edges]
    largest = float(np.nanmax(np.abs(scores))) if np.isfinite(scores).any() else 0.0
    slots = np.searchsorted(graph.slot_start, edges, side="right") - 1
    src, dst = graph.edge_src[edges], graph.edge_dst[edges]
    lines = []
    for e, s, d, slot, score in zip(edges, src, dst, slots, scores, strict=True):
        port = graph.dests[int(slot)].port
        offset = {Port.Q: -7.0, Port.K: 0.0, Port.V: 7.0}.get(port, 0.0)
        colour, role = _edge_colour(float(score), support)
        width = 0.6 + 3.4 * abs(score) / largest if np.isfinite(score) and largest > 0 else 0.8
        dash = f' stroke-dasharray="{DASH[port]}"' if DASH[port] else ""
        title = graph.edge_name(int(e)) + (f": {score:.4g}{role}" if np.isfinite(score) else "")
        lines.append(f'<line class="edge" x1="{at.x[s]:.1f}" y1="{at.y[s] - 7:.1f}" x2="{at.x[d] + offset:.1f}" '
                     f'y2="{at.y[d] + 7:.1f}" stroke="{colour}" stroke-width="{width:.2f}" stroke-opacity="0.7"'
                     f'{dash}><title>{escape(title)}</title></line>')
    return '<g class="edges">' + "".join(lines) + "</g>"


def _edge_colour(score: float, support: float | None) -> tuple[str, str]:
    """An edge's colour and the words its title adds: by effect on the task, else by raw sign."""
    if not np.isfinite(score) or score == 0:
        return UNSCORED, ""
    if support is None:
        return (POSITIVE, "") if score > 0 else (NEGATIVE, "")
    return (SUPPORTS, ", supports the answer") if score * support > 0 else (OPPOSES, ", works against it")


def _nodes_svg(graph: ModelGraph, at: Placement, circuit: Circuit, options: DiagramOptions) -> list[str]:
    in_circuit = circuit.node_mask
    sizes = _node_sizes(circuit, options)
    shade = _shades(circuit, options)
    out = []
    for i, node in enumerate(graph.nodes):
        name = node.name
        if not in_circuit[i]:
            out.append(f'<circle class="slot" cx="{at.x[i]:.1f}" cy="{at.y[i]:.1f}" r="2" fill="#dddddd">'
                       f"<title>{name} (not in the circuit)</title></circle>")
            continue
        ring = f' stroke="{SHARED_RING}" stroke-width="3"' if name in options.shared else ' stroke="#ffffff"'
        label = f"{name}: {_node_title(circuit, i, options)}"
        r = sizes[i]
        shape = (f'<rect x="{at.x[i] - r:.1f}" y="{at.y[i] - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" rx="2"'
                 if node.kind is NodeKind.MLP else f'<circle cx="{at.x[i]:.1f}" cy="{at.y[i]:.1f}" r="{r:.1f}"')
        shared = ' data-shared="1"' if name in options.shared else ""
        out.append(f'<g class="node" data-name="{name}" data-kind="{node.kind.value}"{shared}{shade.get(name, "")}>'
                   f'{shape} fill="{KIND_COLOUR[node.kind]}"{ring}/><title>{escape(label)}</title>'
                   f'<text class="label" x="{at.x[i]:.1f}" y="{_label_y(node.kind, at.y[i], r):.1f}" '
                   f'text-anchor="middle" font-size="7.5" fill="#222222" stroke="#ffffff" stroke-width="2.5" '
                   f'paint-order="stroke">{name}</text></g>')
    return out


def _label_y(kind: NodeKind, y: float, r: float) -> float:
    """A name's baseline: above ``logits`` (its edges arrive from below), below every other node."""
    return y - r - 3 if kind is NodeKind.LOGITS else y + r + 8


def _shades(circuit: Circuit, options: DiagramOptions) -> dict[str, str]:
    """Per kept component, the attributes that shade it: its frequency across resamples when the circuit comes
    from a resampled run, else its |score| relative to the largest when components are scored."""
    names = circuit.graph.node_names
    kept = np.flatnonzero(circuit.node_mask)
    if options.frequency is not None:
        return {names[i]: _frequency_attrs(names[i], options) for i in kept}
    scores = np.abs(circuit.node_scores[kept])
    top = float(np.nanmax(scores)) if np.isfinite(scores).any() else 0.0
    if top <= 0:
        return {}
    return {names[i]: f' data-score="{circuit.node_scores[i]:.4g}" fill-opacity="{0.3 + 0.7 * s / top:.3f}"'
            for i, s in zip(kept, scores, strict=True) if np.isfinite(s)}


def _frequency_attrs(name: str, options: DiagramOptions) -> str:
    """A component's frequency across resamples as data and as opacity (0.2 seen once in many, 1 in all)."""
    if options.frequency is None or name not in options.frequency:
        return ""
    f = options.frequency[name]
    return f' data-frequency="{f:.3f}" fill-opacity="{0.2 + 0.8 * f:.3f}"'


def _node_sizes(circuit: Circuit, options: DiagramOptions) -> np.ndarray:
    """Radius per node: fixed in the edge view; by support, else by |score|, in the node view."""
    n = circuit.graph.n_nodes
    if not options.node_view:
        return np.full(n, 7.0)
    names = circuit.graph.node_names
    if options.support:
        values = np.array([options.support.get(name, 0) for name in names], dtype=float)
    else:
        values = np.nan_to_num(np.abs(circuit.node_scores), nan=0.0)
    top = values.max(initial=0.0)
    return 4.0 + 8.0 * values / top if top > 0 else np.full(n, 7.0)


def _node_title(circuit: Circuit, i: int, options: DiagramOptions) -> str:
    score = circuit.node_scores[i]
    parts = [f"score {score:.4g}" if np.isfinite(score) else "no score"]
    if options.support is not None:
        parts.append(f"support {options.support.get(circuit.graph.node_names[i], 0)}")
    if options.frequency is not None and (name := circuit.graph.node_names[i]) in options.frequency:
        parts.append(f"in {options.frequency[name]:.0%} of the resamples")
    if circuit.graph.node_names[i] in options.shared:
        parts.append("shared")
    return ", ".join(parts)


def caption_lines(circuit: Circuit, options: DiagramOptions, drawn: int, hidden: int, support: float | None,
                  width: float) -> list[str]:
    """What the diagram shows and its legend, wrapped so that no line is wider than ``width`` pixels."""
    p = circuit.provenance
    text = f"{p.model} / {p.task} / {p.method}: {circuit.n_nodes} nodes"
    if not options.node_view and circuit.has_edges:
        text += f", {drawn} of {circuit.n_edges} edges drawn" + (f" ({hidden} hidden)" if hidden else "")
        text += ". " + _legend(support, p.metric)
    chars = max(12, int((width - 8) / (CAPTION_SIZE * CHAR_WIDTH)))
    return textwrap.wrap(text, chars, break_on_hyphens=False)


def _legend(support: float | None, metric: str | None) -> str:
    ports = "width by |score|; q solid, k dashed, v dotted"
    if support is None:
        return f"Purple: positive score, green: negative (the metric is unknown); {ports}."
    harm = "raises KL to the full model" if support > 0 else f"lowers {metric}"
    return f"Blue: supports the answer (ablating it {harm}), orange: works against it; {ports}."
