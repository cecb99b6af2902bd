"""A circuit as an SVG diagram on its model's layered grid (``service.report.layout``).

Edges are drawn with width by |score| and colour by sign where scores exist (grey where none),
and their destination port by dash pattern (q solid, k dashed, v dotted; MLP and logits inputs
solid); at most ``top_edges`` edges are drawn, the largest |score| first, with a note saying how
many are hidden. The node view draws components only, sized by |score| or, when given, by
support. Components named in ``shared`` get a gold ring. A circuit of a resampled run shades each
component by its frequency across the resamples (opaque: in every one). Every drawn node is one
``<g class="node" data-name=...>`` with a ``<title>`` that shows on hover.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import numpy as np

from service.circuit import Circuit
from service.graph import ModelGraph
from service.report.layout import Placement, place
from service.types import NodeKind, Port

DEFAULT_TOP_EDGES = 300
KIND_COLOUR = {NodeKind.INPUT: "#555555", NodeKind.ATTENTION: "#2f6db5", NodeKind.MLP: "#d9822b",
               NodeKind.LOGITS: "#3a9e5a"}
DASH = {Port.Q: "", Port.K: "5 3", Port.V: "1.5 2.5", Port.MLP: "", Port.LOGITS: ""}
POSITIVE, NEGATIVE, UNSCORED = "#2166ac", "#b2182b", "#8c8c8c"
SHARED_RING = "#e0a800"


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
    parts = [_edge_svg(graph, at, circuit, edges)] if len(edges) else []
    parts += _nodes_svg(graph, at, circuit, options)
    note = _note(circuit, options, len(edges), hidden)
    height = at.height + 18
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="circuit" data-id="{circuit.id}" '
            f'width="{at.width:.0f}" height="{height:.0f}" viewBox="0 0 {at.width:.0f} {height:.0f}" '
            f'font-family="sans-serif" font-size="9">'
            f'<text class="note" x="4" y="{height - 5:.0f}" font-size="10">{escape(note)}</text>'
            + "".join(parts) + "</svg>")


def _top_edges(circuit: Circuit, options: DiagramOptions) -> np.ndarray:
    """Indices of the in-circuit edges drawn: the ``top_edges`` largest |score| (unscored last)."""
    assert circuit.edge_mask is not None and circuit.edge_scores is not None
    idx = np.flatnonzero(circuit.edge_mask)
    magnitude = np.nan_to_num(np.abs(circuit.edge_scores[idx]), nan=-1.0)
    order = np.lexsort((idx, -magnitude))
    return idx[order[:options.top_edges]]


def _edge_svg(graph: ModelGraph, at: Placement, circuit: Circuit, edges: np.ndarray) -> str:
    assert circuit.edge_scores is not None
    scores = circuit.edge_scores[edges]
    largest = float(np.nanmax(np.abs(scores))) if np.isfinite(scores).any() else 0.0
    slots = np.searchsorted(graph.slot_start, edges, side="right") - 1
    src, dst = graph.edge_src[edges], graph.edge_dst[edges]
    lines = []
    for e, s, d, slot, score in zip(edges, src, dst, slots, scores, strict=True):
        port = graph.dests[int(slot)].port
        offset = {Port.Q: -7.0, Port.K: 0.0, Port.V: 7.0}.get(port, 0.0)
        if np.isfinite(score) and largest > 0:
            colour, width = (POSITIVE if score >= 0 else NEGATIVE), 0.6 + 3.4 * abs(score) / largest
        else:
            colour, width = UNSCORED, 0.8
        dash = f' stroke-dasharray="{DASH[port]}"' if DASH[port] else ""
        title = graph.edge_name(int(e)) + (f": {score:.4g}" if np.isfinite(score) else "")
        lines.append(f'<line class="edge" x1="{at.x[s]:.1f}" y1="{at.y[s] - 7:.1f}" x2="{at.x[d] + offset:.1f}" '
                     f'y2="{at.y[d] + 7:.1f}" stroke="{colour}" stroke-width="{width:.2f}" stroke-opacity="0.7"'
                     f'{dash}><title>{escape(title)}</title></line>')
    return '<g class="edges">' + "".join(lines) + "</g>"


def _nodes_svg(graph: ModelGraph, at: Placement, circuit: Circuit, options: DiagramOptions) -> list[str]:
    in_circuit = circuit.node_mask
    sizes = _node_sizes(circuit, options)
    out = []
    for i, node in enumerate(graph.nodes):
        if not in_circuit[i]:
            out.append(f'<circle class="slot" cx="{at.x[i]:.1f}" cy="{at.y[i]:.1f}" r="2" fill="#dddddd"/>')
            continue
        name = node.name
        ring = f' stroke="{SHARED_RING}" stroke-width="3"' if name in options.shared else ' stroke="#ffffff"'
        label = f"{name}: {_node_title(circuit, i, options)}"
        r = sizes[i]
        shape = (f'<rect x="{at.x[i] - r:.1f}" y="{at.y[i] - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" rx="2"'
                 if node.kind is NodeKind.MLP else f'<circle cx="{at.x[i]:.1f}" cy="{at.y[i]:.1f}" r="{r:.1f}"')
        shared = ' data-shared="1"' if name in options.shared else ""
        out.append(f'<g class="node" data-name="{name}" data-kind="{node.kind.value}"{shared}'
                   f'{_frequency_attrs(name, options)}>{shape} '
                   f'fill="{KIND_COLOUR[node.kind]}"{ring}/><title>{escape(label)}</title></g>')
    return out


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


def _note(circuit: Circuit, options: DiagramOptions, drawn: int, hidden: int) -> str:
    p = circuit.provenance
    head = f"{p.model} / {p.task} / {p.method}: {circuit.n_nodes} nodes"
    if options.node_view or not circuit.has_edges:
        return head
    return head + f", {drawn} of {circuit.n_edges} edges drawn" + (f" ({hidden} hidden)" if hidden else "")
