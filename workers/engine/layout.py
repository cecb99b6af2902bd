"""Where each destination's edges sit in the graph's edge order, for tensor views of masks.

The catalogue's edge order (``service.graph``) puts, per layer, the heads' q/k/v inputs
(head-major, then port, then source) followed by the MLP input, and the logits last; a
destination's sources are always the first ``S`` nodes. So an edge vector reshapes per layer
into ``[heads, 3, S]`` and ``[S']`` blocks without any gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from circat.service.graph import ModelGraph, graph_for
from circat.service.types import ModelShape


@dataclass(frozen=True)
class LayerSlots:
    """One layer's edge blocks: attention inputs ``[H, 3, n_attn_sources]`` then the MLP input."""

    layer: int
    attn_start: int
    n_attn_sources: int
    mlp_start: int
    n_mlp_sources: int
    head_nodes: range
    mlp_node: int


@dataclass(frozen=True)
class Layout:
    """Edge blocks of every layer and of the logits; node indices of every source."""

    graph: ModelGraph
    layers: tuple[LayerSlots, ...]
    logits_start: int
    n_sources: int


@lru_cache(maxsize=16)
def layout_for(shape: ModelShape) -> Layout:
    """The (cached) layout of a model shape's graph."""
    graph = graph_for(shape)
    h = shape.n_heads
    layers = []
    start, before = 0, 1
    for layer in range(shape.n_layers):
        mlp_sources = before if shape.parallel_attn_mlp else before + h
        mlp_start = start + 3 * h * before
        layers.append(LayerSlots(layer, start, before, mlp_start, mlp_sources, range(before, before + h), before + h))
        start = mlp_start + mlp_sources
        before += h + 1
    assert start + before == graph.n_edges, "layout disagrees with service.graph"
    return Layout(graph, tuple(layers), start, before)
