"""The computation graph of a model shape, held as arrays with canonical MIB names.

Node order: ``input``, then per layer its heads and its MLP, then ``logits``. Edge order:
destinations in forward order (per head q, k, v), each with its sources in node order.
Circuits, masks and overlaps are boolean/float vectors over these two orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from service.types import Edge, InvalidName, ModelShape, Node, NodeKind, Port


@dataclass(frozen=True, eq=False)
class ModelGraph:
    """Nodes and edges of one model shape, with name <-> index maps."""

    shape: ModelShape
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    edge_src: np.ndarray = field(repr=False)
    edge_dst: np.ndarray = field(repr=False)
    node_index: dict[str, int] = field(repr=False)
    edge_index: dict[str, int] = field(repr=False)

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @cached_property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @cached_property
    def edge_names(self) -> list[str]:
        return [e.name for e in self.edges]

    @cached_property
    def component_mask(self) -> np.ndarray:
        """Boolean vector over nodes: heads and MLPs (not ``input``/``logits``)."""
        return np.array([n.is_component for n in self.nodes], dtype=bool)

    def edge_id(self, name: str) -> int:
        """Index of an edge name; ``KeyError`` when the graph has no such edge."""
        return self.edge_index[name]

    def node_id(self, name: str) -> int:
        """Index of a node name; ``KeyError`` when the graph has no such node."""
        return self.node_index[name]

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


def _layer_nodes(shape: ModelShape, layer: int) -> tuple[list[Node], Node]:
    heads = [Node(NodeKind.ATTENTION, layer, h) for h in range(shape.n_heads)]
    return heads, Node(NodeKind.MLP, layer)


def _destinations(shape: ModelShape) -> list[tuple[Node, Port, int]]:
    """Each destination input with the number of nodes (in node order) that may feed it."""
    dests: list[tuple[Node, Port, int]] = []
    before = 1  # input
    for layer in range(shape.n_layers):
        heads, mlp = _layer_nodes(shape, layer)
        for head in heads:
            dests.extend((head, port, before) for port in (Port.Q, Port.K, Port.V))
        mlp_sources = before if shape.parallel_attn_mlp else before + shape.n_heads
        dests.append((mlp, Port.MLP, mlp_sources))
        before += shape.n_heads + 1
    dests.append((Node(NodeKind.LOGITS), Port.LOGITS, before))
    return dests


@lru_cache(maxsize=32)
def graph_for(shape: ModelShape) -> ModelGraph:
    """The (cached) computation graph of a model shape."""
    nodes: list[Node] = [Node(NodeKind.INPUT)]
    for layer in range(shape.n_layers):
        heads, mlp = _layer_nodes(shape, layer)
        nodes.extend([*heads, mlp])
    nodes.append(Node(NodeKind.LOGITS))
    node_index = {n.name: i for i, n in enumerate(nodes)}

    edges: list[Edge] = []
    src_ids: list[int] = []
    dst_ids: list[int] = []
    for dst, port, n_sources in _destinations(shape):
        d = node_index[dst.name]
        for s in range(n_sources):
            edges.append(Edge(nodes[s], dst, port))
            src_ids.append(s)
            dst_ids.append(d)
    return ModelGraph(
        shape=shape,
        nodes=tuple(nodes),
        edges=tuple(edges),
        edge_src=np.asarray(src_ids, dtype=np.int32),
        edge_dst=np.asarray(dst_ids, dtype=np.int32),
        node_index=node_index,
        edge_index={e.name: i for i, e in enumerate(edges)},
    )
