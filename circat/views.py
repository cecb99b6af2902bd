"""What the Python API returns: circuits and result tables that display inline in Jupyter.

Rows of any listing convert to a pandas DataFrame (``.to_pandas()``, pandas optional); a circuit draws its
diagram (``_repr_svg_``); overlap, shared and matrix results draw as tables and heatmaps (``_repr_html_``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from html import escape
from typing import Any

import numpy as np

from circat.service.circuit import Circuit, Provenance
from circat.service.documents import document_from_circuit, mib_from_circuit
from circat.service.overlap import Matrix
from circat.service.report.diagram import DiagramOptions, circuit_svg
from circat.service.report.heatmap import heatmap_svg


def record(item: Any) -> dict[str, Any]:
    """One row as a plain dict: a dataclass's fields, a dict as it is."""
    if isinstance(item, dict):
        return item
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    raise TypeError(f"cannot show a {type(item).__name__} as a row")


def pandas() -> Any:
    """The pandas module, or an ImportError saying how to install it (pandas is optional)."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("to_pandas needs pandas: pip install pandas") from exc
    return pd


def html_table(rows: Iterable[dict[str, Any]], caption: str = "") -> str:
    """A plain HTML table of rows (the columns of the first row)."""
    rows = list(rows)
    head = list(rows[0]) if rows else []
    cells = "".join("<tr>" + "".join(f"<td>{escape(_cell_text(r.get(k)))}</td>" for k in head) + "</tr>" for r in rows)
    return (f"<table><caption>{escape(caption)}</caption><thead><tr>"
            + "".join(f"<th>{escape(k)}</th>" for k in head) + f"</tr></thead><tbody>{cells}</tbody></table>")


def _cell_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | tuple) and len(v) > 8:
        return ", ".join(map(str, v[:8])) + f", ... ({len(v)})"
    return "" if v is None else str(v.value if hasattr(v, "value") and not isinstance(v, str) else v)


class Rows(list):
    """A listing (circuits, evaluations, jobs): a list of records, a table in Jupyter, a DataFrame on request."""

    def __init__(self, items: Iterable[Any], total: int | None = None, caption: str = "") -> None:
        super().__init__(items)
        self.total = len(self) if total is None else total
        self.caption = caption

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas: ``pip install pandas``)."""
        return pandas().DataFrame([record(r) for r in self])

    def _repr_html_(self) -> str:
        caption = self.caption or f"{len(self)} of {self.total}"
        return html_table((record(r) for r in self), caption)


class CircuitView:
    """A stored circuit: its components, edges, scores and provenance; exports; its diagram in Jupyter."""

    def __init__(self, circuit: Circuit) -> None:
        self.circuit = circuit

    @property
    def id(self) -> str:
        return self.circuit.id

    @property
    def provenance(self) -> Provenance:
        return self.circuit.provenance

    @property
    def faithfulness(self) -> float | None:
        return self.circuit.provenance.faithfulness

    @property
    def nodes(self) -> list[str]:
        """The components the circuit keeps (canonical MIB names: ``a9.h1``, ``m9``, ``input``, ``logits``)."""
        return self.circuit.node_names

    @property
    def edges(self) -> list[str]:
        """The edges the circuit keeps (``a5.h5->a9.h1<v>``); empty for a node-only circuit."""
        return self.circuit.edge_names if self.circuit.has_edges else []

    @property
    def node_scores(self) -> dict[str, float]:
        """Every scored component of the model graph (kept or not) and its score."""
        g = self.circuit.graph
        return {g.node_names[i]: float(s) for i, s in enumerate(self.circuit.node_scores) if np.isfinite(s)}

    @property
    def edge_scores(self) -> dict[str, float]:
        """Every scored edge of the model graph (kept or not) and its score; empty when edges carry none."""
        scores = self.circuit.edge_scores
        if scores is None:
            return {}
        g = self.circuit.graph
        return {g.edge_name(int(i)): float(scores[i]) for i in np.flatnonzero(np.isfinite(scores))}

    def to_mib(self) -> dict[str, Any]:
        """The circuit as an EAP-IG / MIB graph JSON document."""
        return mib_from_circuit(self.circuit)

    def to_document(self) -> dict[str, Any]:
        """The circuit in the catalogue's exchange format (``schema/circuit.schema.json``)."""
        return document_from_circuit(self.circuit).model_dump(mode="json")

    def to_networkx(self) -> Any:
        """A ``networkx.DiGraph`` of the kept components and edges (scores as ``score`` attributes; needs networkx;
        a node-only circuit has no edges)."""
        try:
            import networkx as nx
        except ImportError as exc:
            raise ImportError("CircuitView.to_networkx needs networkx: pip install networkx") from exc
        graph = nx.DiGraph(id=self.id, model=self.provenance.model, task=self.provenance.task)
        scores, edge_scores = self.node_scores, self.edge_scores
        graph.add_nodes_from((n, {"score": scores.get(n)}) for n in self.nodes)
        g = self.circuit.graph
        if self.circuit.has_edges:
            for name in self.edges:
                i = g.find_edge(name)
                assert i is not None
                src, dst = g.node_names[g.edge_src[i]], g.node_names[g.edge_dst[i]]
                graph.add_edge(src, dst, name=name, score=edge_scores.get(name))
        return graph

    def svg(self, top_edges: int = 300, node_view: bool = False) -> str:
        """The circuit's diagram as an SVG document."""
        return circuit_svg(self.circuit, DiagramOptions(top_edges=top_edges, node_view=node_view))

    def _repr_svg_(self) -> str:
        return self.svg()

    def __repr__(self) -> str:
        p = self.provenance
        edges = f", {self.circuit.n_edges} edges" if self.circuit.has_edges else ""
        faith = f", faithfulness {p.faithfulness:.3f}" if p.faithfulness is not None else ""
        return f"<Circuit {self.id} {p.model}/{p.task}/{p.method}: {self.circuit.n_nodes} nodes{edges}{faith}>"


class Overlap(list):
    """How two circuits overlap, one row per level (node, edge), with chance's figures."""

    def _repr_html_(self) -> str:
        rows = [{"level": p.level.value, "|A|": p.size_a, "|B|": p.size_b, "shared": len(p.shared),
                 "expected shared": p.chance.expected_shared, "jaccard": p.jaccard,
                 "expected jaccard": p.chance.expected_jaccard, "p": p.chance.p, "A in B": p.a_in_b,
                 "B in A": p.b_in_a} for p in self]
        return html_table(rows, "overlap (expected: by chance)")


class Shared(list):
    """The sub-circuit several circuits share, per level, with support counts and chance's figures."""

    def _repr_html_(self) -> str:
        out = []
        for c in self:
            caption = (f"{len(c.support)} {c.level.value}s in >= {c.min_support} of {c.n_circuits} circuits; "
                       f"by chance {c.chance.expected_shared:.2f} expected (p = {c.chance.p:.3g})")
            out.append(html_table([{"item": k, "support": v} for k, v in c.support.items()], caption))
        return "".join(out)


class MatrixView:
    """A pairwise Jaccard matrix: a heatmap in Jupyter (cells not above chance grey), a DataFrame on request."""

    def __init__(self, matrix: Matrix, labels: list[str]) -> None:
        self.matrix = matrix
        self.labels = labels

    def to_pandas(self, level: str = "node") -> Any:
        """The Jaccard grid at ``level`` (node or edge) as a DataFrame indexed by circuit id."""
        grid = self.matrix.node if level == "node" else self.matrix.edge
        return pandas().DataFrame(grid, index=self.matrix.ids, columns=self.matrix.ids)

    def _repr_html_(self) -> str:
        m = self.matrix
        maps = [heatmap_svg(self.labels, m.node, "node Jaccard", m.node_p, m.node_expected)]
        if any(v is not None for row in m.edge for v in row):
            maps.append(heatmap_svg(self.labels, m.edge, "edge Jaccard", m.edge_p, m.edge_expected))
        return "<div>" + "".join(maps) + "</div>"

