"""Exchange formats (pydantic): our circuit document and the MIB / EAP-IG graph JSON.

``circuit_from_document`` is the one gate into the catalogue: it resolves the model shape,
checks every name, edge and score, and raises ``CircuitInvalid`` naming each problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from service.circuit import Circuit, Provenance
from service.errors import CircuitInvalid
from service.graph import ModelGraph, graph_for
from service.models import KNOWN_SHAPES
from service.types import ModelShape

FORMAT = "circat.circuit/1"
ShapeLookup = Callable[[str], ModelShape | None]


class ShapeDoc(BaseModel):
    """A model's shape: enough to name its computation graph."""

    model_config = ConfigDict(extra="forbid")
    n_layers: int = Field(ge=1)
    n_heads: int = Field(ge=1)
    parallel_attn_mlp: bool = False
    d_model: int | None = Field(default=None, ge=1)

    def to_shape(self) -> ModelShape:
        return ModelShape(self.n_layers, self.n_heads, self.parallel_attn_mlp, self.d_model)


class Item(BaseModel):
    """One node or edge of a circuit file: membership, optional score and neuron mask."""

    model_config = ConfigDict(extra="forbid")
    in_graph: bool = True
    score: float | None = None
    neurons: list[bool] | None = None
    neurons_scores: list[float | None] | None = None


class CircuitDocument(BaseModel):
    """Our circuit format: MIB-style items plus full provenance."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["circat.circuit/1"] = FORMAT
    id: str | None = None
    model: str = Field(min_length=1)
    shape: ShapeDoc | None = None
    task: str = Field(min_length=1)
    task_family: str | None = None
    method: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    metric: str | None = None
    faithfulness: float | None = None
    citation: str | None = None
    created_at: datetime | None = None
    nodes: dict[str, Item]
    edges: dict[str, Item] | None = None
    annotations: dict[str, Any] = Field(default_factory=dict)


class MibDocument(BaseModel):
    """The MIB / EAP-IG ``Graph.to_json`` file; old files give nodes as plain booleans."""

    cfg: dict[str, Any]
    nodes: dict[str, bool | Item]
    edges: dict[str, Item] = Field(default_factory=dict)


def resolve_shape(model: str, given: ShapeDoc | None, lookup: ShapeLookup | None) -> ModelShape | None:
    """The shape a circuit is validated against: its own, a registered one, or a known one."""
    if given is not None:
        return given.to_shape()
    registered = lookup(model) if lookup else None
    return registered or KNOWN_SHAPES.get(model)


def _finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)


def _fill(
    items: dict[str, Item], index: dict[str, int], size: int, kind: str, why: Callable[[str], str], problems: list[str]
) -> tuple[np.ndarray, np.ndarray, dict[int, Item]]:
    mask = np.zeros(size, dtype=bool)
    scores = np.full(size, np.nan)
    found: dict[int, Item] = {}
    for name, item in items.items():
        i = index.get(name)
        if i is None:
            problems.append(why(name))
            continue
        if not _finite(item.score):
            problems.append(f"{kind} {name!r} has a non-finite score ({item.score})")
            continue
        if item.neurons_scores and not all(_finite(s) for s in item.neurons_scores):
            problems.append(f"{kind} {name!r} has non-finite neuron scores")
        mask[i] = item.in_graph
        if item.score is not None:
            scores[i] = item.score
        found[i] = item
    return mask, scores, found


def circuit_from_document(doc: CircuitDocument, lookup: ShapeLookup | None = None) -> Circuit:
    """Validate a document into a circuit; raise ``CircuitInvalid`` listing every problem."""
    shape = resolve_shape(doc.model, doc.shape, lookup)
    if shape is None:
        raise CircuitInvalid([f"unknown model shape for {doc.model!r}: give 'shape' (n_layers, n_heads, ...)"])
    problems: list[str] = []
    registered = lookup(doc.model) if lookup else None
    if registered is not None and registered != shape:
        problems.append(f"model {doc.model!r} is registered with shape {registered}, the circuit says {shape}")
    graph = graph_for(shape)
    size = f"{shape.n_layers} layers x {shape.n_heads} heads"
    node_mask, node_scores, node_items = _fill(
        doc.nodes, graph.node_index, graph.n_nodes, "node",
        lambda n: f"node {n!r} is not a node of {doc.model} ({size})", problems,
    )
    edge_mask = edge_scores = None
    if doc.edges:
        edge_mask, edge_scores, _ = _fill(
            doc.edges, graph.edge_index, graph.n_edges, "edge",
            lambda n: f"edge {graph.why_not_edge(n)}", problems,
        )
    if not _finite(doc.faithfulness):
        problems.append(f"faithfulness is not finite ({doc.faithfulness})")
    if problems:
        raise CircuitInvalid(problems)
    if edge_mask is not None:
        node_mask |= graph.endpoint_mask(edge_mask)
    _require_content(node_mask, node_scores, edge_mask, edge_scores, graph)
    extra = {
        graph.nodes[i].name: item.model_dump(include={"neurons", "neurons_scores"}, exclude_none=True)
        for i, item in node_items.items()
        if item.neurons is not None or item.neurons_scores is not None
    }
    return Circuit(
        provenance=Provenance(
            model=doc.model, task=doc.task, method=doc.method, task_family=doc.task_family,
            params=doc.params, metric=doc.metric, faithfulness=doc.faithfulness,
            citation=doc.citation, **({"created_at": doc.created_at} if doc.created_at else {}),
        ),
        shape=shape,
        node_mask=node_mask,
        node_scores=node_scores,
        edge_mask=edge_mask,
        edge_scores=edge_scores,
        node_extra=extra,
        annotations=doc.annotations,
    )


def _require_content(
    node_mask: np.ndarray, node_scores: np.ndarray, edge_mask: np.ndarray | None,
    edge_scores: np.ndarray | None, graph: ModelGraph,
) -> None:
    has_members = bool((node_mask & graph.component_mask).any()) or (edge_mask is not None and edge_mask.any())
    has_scores = not np.isnan(node_scores).all() or (edge_scores is not None and not np.isnan(edge_scores).all())
    if not (has_members or has_scores):
        raise CircuitInvalid(["circuit is empty: no head, MLP or edge is in the graph and nothing is scored"])


def _items(names: list[str], mask: np.ndarray, scores: np.ndarray) -> dict[str, Item]:
    out: dict[str, Item] = {}
    for i in np.flatnonzero(mask | ~np.isnan(scores)):
        s = scores[i]
        out[names[i]] = Item(in_graph=bool(mask[i]), score=None if np.isnan(s) else float(s))
    return out


def document_from_circuit(c: Circuit) -> CircuitDocument:
    """Our JSON document of a stored or built circuit (only items in the graph or scored)."""
    g = c.graph
    nodes = _items(g.node_names, c.node_mask, c.node_scores)
    for name, extra in c.node_extra.items():
        nodes[name] = nodes.get(name, Item(in_graph=False)).model_copy(update=extra)
    edges = None
    if c.edge_mask is not None and c.edge_scores is not None:
        edges = _items(g.edge_names, c.edge_mask, c.edge_scores)
    p = c.provenance
    return CircuitDocument(
        id=c.id, model=p.model, shape=ShapeDoc(**c.shape.__dict__), task=p.task, task_family=p.task_family,
        method=p.method, params=p.params, metric=p.metric, faithfulness=p.faithfulness, citation=p.citation,
        created_at=p.created_at, nodes=nodes, edges=edges, annotations=c.annotations,
    )


def mib_to_document(mib: MibDocument, model: str, task: str, method: str, **provenance: Any) -> CircuitDocument:
    """Wrap a MIB / EAP-IG file with the provenance the file itself does not carry."""
    cfg = dict(mib.cfg)
    missing = [k for k in ("n_layers", "n_heads") if k not in cfg]
    if missing:
        raise CircuitInvalid([f"MIB cfg lacks {k!r}" for k in missing])
    shape = ShapeDoc(
        n_layers=cfg.pop("n_layers"), n_heads=cfg.pop("n_heads"),
        parallel_attn_mlp=cfg.pop("parallel_attn_mlp", False), d_model=cfg.pop("d_model", None),
    )
    nodes = {n: v if isinstance(v, Item) else Item(in_graph=v) for n, v in mib.nodes.items()}
    annotations = dict(provenance.pop("annotations", {}))
    if cfg:
        annotations["mib_cfg"] = cfg
    return CircuitDocument(
        model=model, shape=shape, task=task, method=method, nodes=nodes,
        edges=mib.edges or None, annotations=annotations, **provenance,
    )


def mib_from_circuit(c: Circuit) -> dict[str, Any]:
    """The MIB / EAP-IG JSON of a circuit: every node and, for edge circuits, every edge."""
    g = c.graph
    cfg: dict[str, Any] = {"n_layers": c.shape.n_layers, "n_heads": c.shape.n_heads,
                           "parallel_attn_mlp": c.shape.parallel_attn_mlp}
    if c.shape.d_model is not None:
        cfg["d_model"] = c.shape.d_model
    cfg |= c.annotations.get("mib_cfg", {})
    nodes: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(g.node_names):
        entry: dict[str, Any] = {"in_graph": bool(c.node_mask[i])}
        if not np.isnan(c.node_scores[i]):
            entry["score"] = float(c.node_scores[i])
        nodes[name] = entry | c.node_extra.get(name, {})
    edges: dict[str, dict[str, Any]] = {}
    if c.edge_mask is not None and c.edge_scores is not None:
        for i, name in enumerate(g.edge_names):
            s = c.edge_scores[i]
            edges[name] = {"score": None if np.isnan(s) else float(s), "in_graph": bool(c.edge_mask[i])}
    return {"cfg": cfg, "nodes": nodes, "edges": edges}
