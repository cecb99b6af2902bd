"""Exchange formats (pydantic): our circuit document and the MIB / EAP-IG graph JSON.

``circuit_from_document`` is the one gate into the catalogue: it resolves the model shape,
checks every name, edge and score, and raises ``CircuitInvalid`` naming each problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from circat.service.annotations import problems as annotation_problems
from circat.service.circuit import Circuit, Provenance
from circat.service.errors import CircuitInvalid, shape_conflict
from circat.service.graph import ModelGraph, graph_for
from circat.service.limits import MAX_NAME_LENGTH, Limits
from circat.service.models import KNOWN_SHAPES
from circat.service.types import Level, ModelShape

FORMAT = "circat.circuit/1"
ShapeLookup = Callable[[str], ModelShape | None]


def _encodable(text: str) -> str:
    """Refuse strings that are not valid Unicode (lone surrogates): they could not be stored or echoed."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text holds a lone surrogate (not valid Unicode)") from None
    return text


def _plain_json(value: Any, depth: int = 0) -> Any:
    """Refuse non-finite numbers, invalid Unicode and nesting past 64 levels in free-form fields."""
    if depth > 64:
        raise ValueError("nested more than 64 levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"non-finite number ({value}) is not JSON")
    if isinstance(value, str):
        _encodable(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _encodable(k)
            _plain_json(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _plain_json(v, depth + 1)
    return value


def _timestamp(value: Any) -> Any:
    """Timestamps are ISO 8601 strings (or datetimes built in Python), never bare numbers."""
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("created_at must be an ISO 8601 date-time string")
    return value


Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH), AfterValidator(_encodable)]
Text = Annotated[str, StringConstraints(max_length=4096), AfterValidator(_encodable)]
FreeJson = Annotated[dict[str, Any], AfterValidator(_plain_json)]
# Item names as JSON Schema patterns; the gate checks them against the model's graph and names each bad one.
NODE_NAME = r"^(input|logits|a[0-9]+\.h[0-9]+|m[0-9]+)$"
EDGE_NAME = r"^(input|a[0-9]+\.h[0-9]+|m[0-9]+)->(a[0-9]+\.h[0-9]+<[qkv]>|m[0-9]+|logits)$"
INT32 = 2**31 - 1


class ShapeDoc(BaseModel):
    """A model's shape: enough to name its computation graph.

    The graph it names must stay within the server's limits (``CIRCAT_MAX_LAYERS``, default 128;
    ``CIRCAT_MAX_HEADS``, 128; ``CIRCAT_MAX_EDGES``, 2,500,000), or the circuit is refused.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    n_layers: int = Field(ge=1, le=INT32, description="at most CIRCAT_MAX_LAYERS (default 128)")
    n_heads: int = Field(ge=1, le=INT32, description="at most CIRCAT_MAX_HEADS (default 128)")
    parallel_attn_mlp: bool = False
    d_model: int | None = Field(default=None, ge=1, le=INT32)

    def to_shape(self) -> ModelShape:
        return ModelShape(self.n_layers, self.n_heads, self.parallel_attn_mlp, self.d_model)


class Item(BaseModel):
    """One node or edge of a circuit file: membership, optional score and neuron mask."""

    model_config = ConfigDict(extra="forbid", strict=True)
    in_graph: bool = True
    score: float | None = Field(default=None, description="finite")
    neurons: list[bool] | None = None
    neurons_scores: list[float | None] | None = Field(default=None, description="finite")


class CircuitDocument(BaseModel):
    """Our circuit format: MIB-style items plus full provenance.

    Node and edge names must exist in the model's graph (its shape, registered or given), and
    nodes plus edges number at most ``CIRCAT_MAX_ITEMS`` (default 2,600,000).
    """

    model_config = ConfigDict(extra="forbid")
    format: Literal["circat.circuit/1"] = FORMAT
    id: str | None = Field(default=None, max_length=64, description="ignored on import: ids are content hashes")
    model: Name
    shape: ShapeDoc | None = None
    task: Name
    task_family: Name | None = None
    method: Name
    params: FreeJson = Field(default_factory=dict)
    metric: Name | None = None
    faithfulness: float | None = Field(default=None, strict=True, description="finite")
    citation: Text | None = None
    created_at: Annotated[datetime | None, BeforeValidator(_timestamp)] = None
    nodes: dict[str, Item] = Field(json_schema_extra={"propertyNames": {"pattern": NODE_NAME}})
    edges: dict[str, Item] | None = Field(default=None, json_schema_extra={"propertyNames": {"pattern": EDGE_NAME}})
    annotations: FreeJson = Field(default_factory=dict)


class MibCfg(ShapeDoc):
    """The ``cfg`` of a MIB file: the model's shape; other keys are kept as they are."""

    model_config = ConfigDict(extra="allow", strict=True)

    @model_validator(mode="after")
    def _extras_are_plain_json(self) -> MibCfg:
        _plain_json(self.model_extra or {})
        return self


class MibDocument(BaseModel):
    """The MIB / EAP-IG ``Graph.to_json`` file; old files give nodes as plain booleans."""

    cfg: MibCfg
    nodes: dict[str, bool | Item] = Field(json_schema_extra={"propertyNames": {"pattern": NODE_NAME}})
    edges: dict[str, Item] = Field(default_factory=dict, json_schema_extra={"propertyNames": {"pattern": EDGE_NAME}})


def resolve_shape(model: str, given: ShapeDoc | None, lookup: ShapeLookup | None) -> ModelShape | None:
    """The shape a circuit is validated against: its own, a registered one, or a known one."""
    if given is not None:
        return given.to_shape()
    registered = lookup(model) if lookup else None
    return registered or KNOWN_SHAPES.get(model)


def _finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)


def _fill(
    items: dict[str, Item], find: Callable[[str], int | None], size: int, kind: str, why: Callable[[str], str],
    problems: list[str],
) -> tuple[np.ndarray, np.ndarray, dict[int, Item]]:
    mask = np.zeros(size, dtype=bool)
    scores = np.full(size, np.nan)
    found: dict[int, Item] = {}
    for name, item in items.items():
        i = find(name)
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


def circuit_from_document(
    doc: CircuitDocument, lookup: ShapeLookup | None = None, limits: Limits | None = None
) -> Circuit:
    """Validate a document into a circuit; raise ``CircuitInvalid`` listing every problem.

    ``LimitExceeded`` when its size or its model's shape is over ``limits``: checked before
    the model's graph is built.
    """
    limits = limits or Limits()
    limits.check_items(len(doc.nodes) + len(doc.edges or {}))
    shape = resolve_shape(doc.model, doc.shape, lookup)
    if shape is None:
        raise CircuitInvalid([f"unknown model shape for {doc.model!r}: give 'shape' (n_layers, n_heads, ...)"])
    limits.check_shape(shape)
    problems: list[str] = []
    registered = lookup(doc.model) if lookup else None
    if problem := shape_conflict(doc.model, registered, shape):
        problems.append(problem)
    graph = graph_for(shape)
    size = f"{shape.n_layers} layers x {shape.n_heads} heads"
    node_mask, node_scores, node_items = _fill(
        doc.nodes, graph.node_index.get, graph.n_nodes, "node",
        lambda n: f"node {n!r} is not a node of {doc.model} ({size})", problems,
    )
    edge_mask = edge_scores = None
    if doc.edges:
        edge_mask, edge_scores, _ = _fill(
            doc.edges, graph.find_edge, graph.n_edges, "edge",
            lambda n: f"edge {graph.why_not_edge(n)}", problems,
        )
    if not _finite(doc.faithfulness):
        problems.append(f"faithfulness is not finite ({doc.faithfulness})")
    problems.extend(annotation_problems(doc.annotations))
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


def check_circuit(c: Circuit, lookup: ShapeLookup | None = None, limits: Limits | None = None) -> Circuit:
    """The gate for circuits built in memory (the engine's): the document gate's checks, vectorised.

    Limits, the registered shape, names, finite scores and faithfulness, plain-JSON params and
    annotations, items over the right graph, non-empty; ``CircuitInvalid`` names every problem.
    """
    limits = limits or Limits()
    limits.check_shape(c.shape)
    g = c.graph
    p = c.provenance
    problems: list[str] = []
    registered = lookup(p.model) if lookup else None
    if problem := shape_conflict(p.model, registered, c.shape):
        problems.append(problem)
    for field, value in (("model", p.model), ("task", p.task), ("method", p.method), ("task_family", p.task_family),
                         ("metric", p.metric)):
        if value is not None and not 0 < len(value) <= MAX_NAME_LENGTH:
            problems.append(f"{field} must have 1 to {MAX_NAME_LENGTH} characters")
    for kind, mask, scores, size in (("node", c.node_mask, c.node_scores, g.n_nodes),
                                     ("edge", c.edge_mask, c.edge_scores, g.n_edges)):
        if mask is None:
            continue
        if mask.shape != (size,) or scores is None or scores.shape != (size,):
            problems.append(f"{kind} vectors do not match the graph of {c.shape} ({size} {kind}s)")
        elif np.isinf(scores).any():
            problems.append(f"{int(np.isinf(scores).sum())} {kind} score(s) are infinite")
    if not _finite(p.faithfulness):
        problems.append(f"faithfulness is not finite ({p.faithfulness})")
    try:
        _plain_json(p.params)
        _plain_json(c.annotations)
    except ValueError as exc:
        problems.append(f"params or annotations: {exc}")
    problems.extend(annotation_problems(c.annotations))
    if problems:
        raise CircuitInvalid(problems)
    if c.edge_mask is not None and (g.endpoint_mask(c.edge_mask) & ~c.node_mask).any():
        raise CircuitInvalid(["a node at an end of an edge of the circuit is missing from its nodes"])
    _require_content(c.node_mask, c.node_scores, c.edge_mask, c.edge_scores, g)
    return c


def _require_content(
    node_mask: np.ndarray, node_scores: np.ndarray, edge_mask: np.ndarray | None,
    edge_scores: np.ndarray | None, graph: ModelGraph,
) -> None:
    has_members = bool((node_mask & graph.component_mask).any()) or (edge_mask is not None and edge_mask.any())
    has_scores = not np.isnan(node_scores).all() or (edge_scores is not None and not np.isnan(edge_scores).all())
    if not (has_members or has_scores):
        raise CircuitInvalid(["circuit is empty: no head, MLP or edge is in the graph and nothing is scored"])


def _items(g: ModelGraph, level: Level, mask: np.ndarray, scores: np.ndarray) -> dict[str, Item]:
    present = np.flatnonzero(mask | ~np.isnan(scores))
    return {
        name: Item(in_graph=bool(mask[i]), score=None if np.isnan(scores[i]) else float(scores[i]))
        for name, i in zip(g.names(level, present), present, strict=True)
    }


def document_from_circuit(c: Circuit) -> CircuitDocument:
    """Our JSON document of a stored or built circuit (only items in the graph or scored)."""
    g = c.graph
    nodes = _items(g, Level.NODE, c.node_mask, c.node_scores)
    for name, extra in c.node_extra.items():
        nodes[name] = nodes.get(name, Item(in_graph=False)).model_copy(update=extra)
    edges = None
    if c.edge_mask is not None and c.edge_scores is not None:
        edges = _items(g, Level.EDGE, c.edge_mask, c.edge_scores)
    p = c.provenance
    return CircuitDocument(
        id=c.id, model=p.model, shape=ShapeDoc(**c.shape.__dict__), task=p.task, task_family=p.task_family,
        method=p.method, params=p.params, metric=p.metric, faithfulness=p.faithfulness, citation=p.citation,
        created_at=p.created_at, nodes=nodes, edges=edges, annotations=c.annotations,
    )


def mib_to_document(mib: MibDocument, model: str, task: str, method: str, **provenance: Any) -> CircuitDocument:
    """Wrap a MIB / EAP-IG file with the provenance the file itself does not carry."""
    shape = ShapeDoc.model_validate(mib.cfg.model_dump(include=set(ShapeDoc.model_fields)))
    cfg = mib.cfg.model_extra or {}
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
        for i, name in enumerate(g.iter_edge_names()):
            s = c.edge_scores[i]
            edges[name] = {"score": None if np.isnan(s) else float(s), "in_graph": bool(c.edge_mask[i])}
    return {"cfg": cfg, "nodes": nodes, "edges": edges}
