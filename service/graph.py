"""The computation graph of a model shape, held as arrays with canonical MIB names.

Node order: ``input``, then per layer its heads and its MLP, then ``logits``. Edge order:
destination inputs in forward order (per head q, k, v), each with its sources in node order;
a destination's sources are always the first ``S`` nodes. So an edge is (destination slot,
source index) and its index is ``slot_start[slot] + source``: names and indices convert by
arithmetic, and a graph costs a few bytes per edge (no Python object per edge).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from circat.service.types import Edge, InvalidName, Level, ModelShape, Node, NodeKind, Port


@dataclass(frozen=True)
class Destination:
    """One destination input: the node, which of its inputs, and how many sources may feed it."""

    node: Node
    port: Port
    n_sources: int

    @property
    def suffix(self) -> str:
        return f"<{self.port.value}>" if self.port.is_attention else ""


def destinations(shape: ModelShape) -> list[Destination]:
    """Every destination input in edge order (cheap: a few per head)."""
    dests: list[Destination] = []
    before = 1  # input
    for layer in range(shape.n_layers):
        for head in range(shape.n_heads):
            node = Node(NodeKind.ATTENTION, layer, head)
            dests.extend(Destination(node, port, before) for port in (Port.Q, Port.K, Port.V))
        mlp_sources = before if shape.parallel_attn_mlp else before + shape.n_heads
        dests.append(Destination(Node(NodeKind.MLP, layer), Port.MLP, mlp_sources))
        before += shape.n_heads + 1
    dests.append(Destination(Node(NodeKind.LOGITS), Port.LOGITS, before))
    return dests


def edge_count(shape: ModelShape) -> int:
    """The number of edges of a shape's graph, in closed form (nothing is built; any size)."""
    h, n = shape.n_heads, shape.n_layers
    before = n + (h + 1) * n * (n - 1) // 2  # sources before each layer, summed over layers
    mlp = before + (0 if shape.parallel_attn_mlp else h * n)
    return 3 * h * before + mlp + 1 + (h + 1) * n


def node_count(shape: ModelShape) -> int:
    """The number of nodes: input, every head and MLP, logits."""
    return shape.n_layers * (shape.n_heads + 1) + 2


@dataclass(frozen=True, eq=False)
class ModelGraph:
    """Nodes and edges of one model shape, with name <-> index conversion."""

    shape: ModelShape
    nodes: tuple[Node, ...]
    node_index: dict[str, int] = field(repr=False)
    dests: tuple[Destination, ...] = field(repr=False)
    slot_start: np.ndarray = field(repr=False)
    slot_of: dict[tuple[str, Port], int] = field(repr=False)
    edge_src: np.ndarray = field(repr=False)
    edge_dst: np.ndarray = field(repr=False)

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_edges(self) -> int:
        return int(self.slot_start[-1])

    @cached_property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @cached_property
    def component_mask(self) -> np.ndarray:
        """Boolean vector over nodes: heads and MLPs (not ``input``/``logits``)."""
        return np.array([n.is_component for n in self.nodes], dtype=bool)

    def node_id(self, name: str) -> int:
        """Index of a node name; ``KeyError`` when the graph has no such node."""
        return self.node_index[name]

    def find_edge(self, name: str) -> int | None:
        """Index of an edge name, or ``None`` when it is not an edge of this graph."""
        try:
            edge = Edge.parse(name)
        except InvalidName:
            return None
        slot = self.slot_of.get((edge.dst.name, edge.port))
        src = self.node_index.get(edge.src.name)
        if slot is None or src is None or src >= self.dests[slot].n_sources:
            return None
        return int(self.slot_start[slot]) + src

    def edge_id(self, name: str) -> int:
        """Index of an edge name; ``KeyError`` when the graph has no such edge."""
        i = self.find_edge(name)
        if i is None:
            raise KeyError(name)
        return i

    def edge_name(self, i: int) -> str:
        """The canonical name of edge ``i``."""
        slot = int(np.searchsorted(self.slot_start, i, side="right")) - 1
        dest = self.dests[slot]
        return f"{self.node_names[i - int(self.slot_start[slot])]}->{dest.node.name}{dest.suffix}"

    def edge(self, i: int) -> Edge:
        """Edge ``i`` as a typed value."""
        slot = int(np.searchsorted(self.slot_start, i, side="right")) - 1
        dest = self.dests[slot]
        return Edge(self.nodes[i - int(self.slot_start[slot])], dest.node, dest.port)

    def iter_edge_names(self) -> Iterator[str]:
        """Every edge name in edge order, generated (nothing is kept)."""
        names = self.node_names
        for dest in self.dests:
            tail = f"->{dest.node.name}{dest.suffix}"
            for s in range(dest.n_sources):
                yield names[s] + tail

    def names(self, level: Level, indices: Iterable[int]) -> list[str]:
        """Names of node or edge indices."""
        if level is Level.NODE:
            return [self.node_names[int(i)] for i in indices]
        return [self.edge_name(int(i)) for i in indices]

    def endpoint_mask(self, edge_mask: np.ndarray) -> np.ndarray:
        """Nodes touched by the edges in ``edge_mask``."""
        nodes = np.zeros(self.n_nodes, dtype=bool)
        nodes[self.edge_src[edge_mask]] = True
        nodes[self.edge_dst[edge_mask]] = True
        return nodes

    def why_not_edge(self, name: str) -> str:
        """Explain why ``name`` is not an edge of this graph (for error messages)."""
        try:
            edge = Edge.parse(name)
        except InvalidName as exc:
            return str(exc)
        for node in (edge.src, edge.dst):
            if node.name not in self.node_index:
                return f"{name!r}: node {node.name!r} is not in this model ({self._size()})"
        if edge.src.kind is NodeKind.LOGITS or edge.dst.kind is NodeKind.INPUT:
            return f"{name!r}: logits has no outputs and input has no inputs"
        return f"{name!r}: runs backwards or within a layer; sources must precede destinations"

    def _size(self) -> str:
        return f"{self.shape.n_layers} layers x {self.shape.n_heads} heads"


@lru_cache(maxsize=16)
def graph_for(shape: ModelShape) -> ModelGraph:
    """The (cached) computation graph of a model shape; check its size with ``service.limits`` first."""
    nodes: list[Node] = [Node(NodeKind.INPUT)]
    for layer in range(shape.n_layers):
        nodes.extend(Node(NodeKind.ATTENTION, layer, h) for h in range(shape.n_heads))
        nodes.append(Node(NodeKind.MLP, layer))
    nodes.append(Node(NodeKind.LOGITS))
    node_index = {n.name: i for i, n in enumerate(nodes)}
    dests = destinations(shape)
    counts = np.array([d.n_sources for d in dests], dtype=np.int64)
    slot_start = np.concatenate([[0], np.cumsum(counts)])
    n_edges = int(slot_start[-1])
    edge_src = (np.arange(n_edges, dtype=np.int64) - np.repeat(slot_start[:-1], counts)).astype(np.int32)
    edge_dst = np.repeat(np.array([node_index[d.node.name] for d in dests], dtype=np.int32), counts)
    return ModelGraph(
        shape=shape,
        nodes=tuple(nodes),
        node_index=node_index,
        dests=tuple(dests),
        slot_start=slot_start,
        slot_of={(d.node.name, d.port): i for i, d in enumerate(dests)},
        edge_src=edge_src,
        edge_dst=edge_dst,
    )
