"""Circuit expressions: set algebra over stored circuits of one model, explicit items and layer selections.

Wherever a circuit is expected, an expression may stand::

    expression := union ("," union)*                 a comma list is the union of its parts
    union      := inter (("|" | "-") inter)*         union, difference (left to right)
    inter      := primary ("&" primary)*             intersection binds tighter than | and -
    primary    := CIRCUIT_ID | ITEM | call | "(" expression ")"
    call       := "shared" "(" union ("," union)* ";" INT ")"     items in at least k of them
                | ("heads" | "mlps" | "layer") "(" RANGE ")"      heads(L0-L8), mlps(all), layer(9)
    RANGE      := "all" | ["L"] INT ["-" ["L"] INT]
    ITEM       := a MIB node (a9.h1, m9, input, logits) or edge name (a5.h5->a9.h1<v>)

An expression evaluates at node level (heads and MLPs; ``input`` and ``logits`` belong to every
circuit) or at edge level. Node level is the default whenever an operand has no edges (a node
circuit, a layer selection, a list of components); edge level needs every operand to have edges.
An empty result is an empty circuit (its faithfulness is 0 by definition), never an error.
Parsing needs no torch; errors name the position of a syntax error, and every unknown id or name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from circat.service.circuit import CIRCUIT_ID
from circat.service.graph import ModelGraph, graph_for
from circat.service.stores.base import Membership
from circat.service.types import Level, ModelShape, NodeKind

_NODE = r"(?:input|logits|a\d+\.h\d+|m\d+)"
_TOKEN = re.compile(rf"""\s*(?:
    (?P<edge>{_NODE}->{_NODE}(?:<[qkv]>)?)
  | (?P<id>{CIRCUIT_ID}(?![\w.]))
  | (?P<call>(?:shared|heads|mlps|layer)(?=\s*\())
  | (?P<node>{_NODE}(?![\w.]))
  | (?P<range>all|L?\d+(?:\s*-\s*L?\d+)?)
  | (?P<op>[&|(),;-])
)""", re.VERBOSE)
SELECTIONS = {"heads": NodeKind.ATTENTION, "mlps": NodeKind.MLP, "layer": None}


class ExpressionError(ValueError):
    """An expression that cannot be parsed or evaluated; the message says where or what."""


@dataclass(frozen=True)
class Ref:
    id: str


@dataclass(frozen=True)
class Items:
    names: tuple[str, ...]


@dataclass(frozen=True)
class Select:
    kind: str
    first: int | None
    last: int | None


@dataclass(frozen=True)
class Op:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Shared:
    parts: tuple[Expr, ...]
    k: int


Expr = Ref | Items | Select | Op | Shared


def text_of(e: Expr) -> str:
    """The canonical text of an expression (one spacing, explicit parentheses): its identity in provenance."""
    if isinstance(e, Ref):
        return e.id
    if isinstance(e, Items):
        return ",".join(e.names) if len(e.names) > 1 else e.names[0]
    if isinstance(e, Select):
        span = "all" if e.first is None else f"L{e.first}" if e.first == e.last else f"L{e.first}-L{e.last}"
        return f"{e.kind}({span})"
    if isinstance(e, Shared):
        return f"shared({', '.join(text_of(p) for p in e.parts)}; {e.k})"
    return f"({text_of(e.left)} {e.op} {text_of(e.right)})"


def circuit_ids(e: Expr) -> list[str]:
    """The stored circuits an expression names, in order of first appearance."""
    if isinstance(e, Ref):
        return [e.id]
    if isinstance(e, Op):
        return list(dict.fromkeys(circuit_ids(e.left) + circuit_ids(e.right)))
    if isinstance(e, Shared):
        return list(dict.fromkeys(i for p in e.parts for i in circuit_ids(p)))
    return []


class _Parser:
    def __init__(self, text: str, max_length: int):
        if len(text) > max_length:
            raise ExpressionError(f"the expression has {len(text):,} characters; at most {max_length:,} "
                                  "(CIRCAT_MAX_EXPRESSION_LENGTH)")
        self.tokens = self._tokenize(text)
        self.i = 0

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str, int]]:
        out, pos = [], 0
        while pos < len(text):
            if not text[pos:].strip():
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                start = len(text) - len(text[pos:].lstrip())
                raise ExpressionError(f"unexpected {text[start:start + 12]!r} at position {start}: expected a "
                                      f"circuit id, a node or edge name, a call or an operator")
            kind = m.lastgroup or "op"
            out.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        return out

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str, int]:
        tok = self._peek()
        if tok is None or (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            wanted = repr(value) if value else kind or "more"
            where = f"at position {tok[2]} ({tok[1]!r})" if tok else "at the end"
            raise ExpressionError(f"expected {wanted} {where}")
        self.i += 1
        return tok

    def parse(self) -> Expr:
        if not self.tokens:
            raise ExpressionError("the expression is empty")
        e = self._list()
        if (tok := self._peek()) is not None:
            raise ExpressionError(f"unexpected {tok[1]!r} at position {tok[2]}")
        return e

    def _list(self) -> Expr:
        return _join(self._unions())

    def _unions(self) -> list[Expr]:
        """Comma-separated unions: a list's parts, or ``shared``'s operands."""
        parts = [self._union()]
        while (tok := self._peek()) is not None and tok[1] == ",":
            self._take(",")
            parts.append(self._union())
        return parts

    def _union(self) -> Expr:
        e = self._inter()
        while (tok := self._peek()) is not None and tok[1] in ("|", "-"):
            self._take()
            e = Op(tok[1], e, self._inter())
        return e

    def _inter(self) -> Expr:
        e = self._primary()
        while (tok := self._peek()) is not None and tok[1] == "&":
            self._take()
            e = Op("&", e, self._primary())
        return e

    def _primary(self) -> Expr:
        tok = self._take()
        kind, value, _ = tok
        if kind == "id":
            return Ref(value)
        if kind in ("node", "edge"):
            return Items((value,))
        if kind == "call":
            return self._call(value)
        if value == "(":
            e = self._list()
            self._take(")")
            return e
        raise ExpressionError(f"unexpected {value!r} at position {tok[2]}")

    def _call(self, name: str) -> Expr:
        self._take("(")
        if name == "shared":
            parts = self._unions()
            self._take(";")
            _, k, at = self._take(kind="range")
            if not k.isdigit() or int(k) < 1:
                raise ExpressionError(f"shared(...; k) needs a whole number k >= 1, got {k!r} at position {at}")
            self._take(")")
            return Shared(tuple(parts), int(k))
        _, span, at = self._take(kind="range")
        self._take(")")
        if span == "all":
            return Select(name, None, None)
        bounds = [int(b) for b in re.findall(r"\d+", span)]
        first, last = bounds[0], bounds[-1]
        if last < first:
            raise ExpressionError(f"{name}({span}) at position {at}: the range runs backwards")
        return Select(name, first, last)


def _join(parts: list[Expr]) -> Expr:
    if all(isinstance(p, Items) for p in parts):
        return Items(tuple(n for p in parts for n in p.names))  # type: ignore[union-attr]
    e = parts[0]
    for p in parts[1:]:
        e = Op("|", e, p)
    return e


def parse(text: str, max_length: int = 4096) -> Expr:
    """The expression ``text`` parsed; ``ExpressionError`` naming the position of a syntax error."""
    return _Parser(text, max_length).parse()


@dataclass(frozen=True, eq=False)
class Selection:
    """What an expression selects in one model's graph: the circuit it stands for."""

    text: str
    model: str
    shape: ModelShape
    level: Level
    node_mask: np.ndarray
    """every node of the selection (``input`` and ``logits`` included)"""
    edge_mask: np.ndarray | None
    """the edges, at edge level (``None`` at node level)"""
    operands: tuple[str, ...]

    @property
    def n_components(self) -> int:
        return int((self.node_mask & graph_for(self.shape).component_mask).sum())

    @property
    def n_edges(self) -> int:
        return 0 if self.edge_mask is None else int(self.edge_mask.sum())


@dataclass(frozen=True)
class _Value:
    nodes: np.ndarray
    edges: np.ndarray | None


def select(expr: Expr, model: str, shape: ModelShape, members: Callable[[list[str]], Sequence[Membership]],
           level: Level | None = None, max_operands: int = 100) -> Selection:
    """Evaluate ``expr`` over the graph of ``model``; ``members`` fetches stored circuits by id.

    Refuses (``ExpressionError``) circuits of another model, unknown names, and edge level where an
    operand has no edges; unknown ids are the store's ``NotFound``.
    """
    ids = circuit_ids(expr)
    if len(ids) > max_operands:
        raise ExpressionError(f"the expression names {len(ids)} circuits; at most {max_operands} (CIRCAT_MAX_IDS)")
    found = {m.id: m for m in members(ids)} if ids else {}
    others = sorted({f"{m.id} ({m.model})" for m in found.values() if m.model != model})
    if others:
        raise ExpressionError(f"circuits of another model than {model!r}: {', '.join(others)}")
    graph = graph_for(shape)
    _check_names(expr, graph)
    node_only = _node_only(expr, found)
    if level is Level.EDGE and node_only:
        raise ExpressionError(f"edge level needs every operand to have edges; these have none: {', '.join(node_only)}")
    chosen = level or (Level.NODE if node_only else Level.EDGE)
    value = _evaluate(expr, graph, found, chosen)
    edges = value.edges if chosen is Level.EDGE else None
    nodes = (value.nodes if edges is None else graph.endpoint_mask(edges)) | ~graph.component_mask
    return Selection(text_of(expr), model, shape, chosen, nodes, edges, tuple(ids))


def _check_names(expr: Expr, graph: ModelGraph) -> None:
    unknown: list[str] = []
    layers = graph.shape.n_layers

    def walk(e: Expr) -> None:
        if isinstance(e, Items):
            unknown.extend(n for n in e.names if n not in graph.node_index and graph.find_edge(n) is None)
        elif isinstance(e, Select) and e.last is not None and e.last >= layers:
            unknown.append(f"{text_of(e)} (the model has layers 0-{layers - 1})")
        elif isinstance(e, Op):
            walk(e.left)
            walk(e.right)
        elif isinstance(e, Shared):
            for p in e.parts:
                walk(p)

    walk(expr)
    if unknown:
        raise ExpressionError(f"not in the graph of {graph.shape}: {', '.join(unknown)}")


def _node_only(expr: Expr, found: dict[str, Membership]) -> list[str]:
    """The operands that have no edges (so the expression can only be evaluated at node level)."""
    if isinstance(expr, Ref):
        return [expr.id] if found[expr.id].edges is None else []
    if isinstance(expr, Items):
        return [text_of(expr)] if not any("->" in n for n in expr.names) else []
    if isinstance(expr, Select):
        return [text_of(expr)]
    if isinstance(expr, Op):
        return _node_only(expr.left, found) + _node_only(expr.right, found)
    return [x for p in expr.parts for x in _node_only(p, found)]


def _evaluate(e: Expr, g: ModelGraph, found: dict[str, Membership], level: Level) -> _Value:
    if isinstance(e, Ref):
        m = found[e.id]
        nodes = np.zeros(g.n_nodes, bool)
        nodes[m.nodes] = True
        edges = None
        if m.edges is not None:
            edges = np.zeros(g.n_edges, bool)
            edges[m.edges] = True
        return _Value(nodes & g.component_mask, edges)
    if isinstance(e, Items):
        return _items(e.names, g)
    if isinstance(e, Select):
        return _Value(_selected(e, g), None)
    if isinstance(e, Op):
        a, b = _evaluate(e.left, g, found, level), _evaluate(e.right, g, found, level)
        combine = {"&": np.logical_and, "|": np.logical_or, "-": lambda x, y: x & ~y}[e.op]
        edges = combine(a.edges, b.edges) if level is Level.EDGE else None
        return _Value(combine(a.nodes, b.nodes), edges)
    values = [_evaluate(p, g, found, level) for p in e.parts]
    nodes = np.sum([v.nodes for v in values], axis=0) >= e.k
    edges = np.sum([v.edges for v in values], axis=0) >= e.k if level is Level.EDGE else None
    return _Value(nodes, edges)


def _items(names: tuple[str, ...], g: ModelGraph) -> _Value:
    nodes = np.zeros(g.n_nodes, bool)
    edges = np.zeros(g.n_edges, bool)
    for n in names:
        if n in g.node_index:
            nodes[g.node_index[n]] = True
        else:
            edges[g.find_edge(n)] = True
    nodes |= g.endpoint_mask(edges)
    return _Value(nodes & g.component_mask, edges if edges.any() else None)


def _selected(e: Select, g: ModelGraph) -> np.ndarray:
    kinds = {SELECTIONS[e.kind]} if SELECTIONS[e.kind] else {NodeKind.ATTENTION, NodeKind.MLP}
    return np.array([n.kind in kinds and (e.first is None or e.first <= (n.layer or 0) <= (e.last or 0))
                     for n in g.nodes])
