"""Where a model graph's nodes sit in a diagram: a fixed layered layout.

Rows are layers, from ``input`` at the bottom to ``logits`` at the top; within a layer's row the
heads sit left to right by index and the MLP at the right end. Positions follow from the shape
alone, so every circuit of a model is drawn on the same grid and diagrams compare at a glance
(a general graph layout engine would move nodes from one circuit to the next).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from circat.service.graph import ModelGraph
from circat.service.types import NodeKind

COLUMN = 34.0
ROW = 46.0
MARGIN = 30.0


@dataclass(frozen=True)
class Placement:
    """Pixel centre of every node of a graph (by node index) and the canvas size."""

    x: np.ndarray
    y: np.ndarray
    width: float
    height: float


def place(graph: ModelGraph) -> Placement:
    """The layered position of each node of ``graph``."""
    shape = graph.shape
    columns = shape.n_heads + 1
    width = 2 * MARGIN + columns * COLUMN
    height = 2 * MARGIN + (shape.n_layers + 1) * ROW
    x, y = np.zeros(graph.n_nodes), np.zeros(graph.n_nodes)
    for i, node in enumerate(graph.nodes):
        row, column = _cell(node.kind, node.layer, node.head, shape.n_layers, columns)
        x[i] = MARGIN + (column + 0.5) * COLUMN
        y[i] = height - MARGIN - row * ROW
    return Placement(x, y, width, height)


def _cell(kind: NodeKind, layer: int | None, head: int | None, n_layers: int, columns: int) -> tuple[int, float]:
    """(row from the bottom, column) of a node."""
    middle = (columns - 1) / 2
    if kind is NodeKind.INPUT:
        return 0, middle
    if kind is NodeKind.LOGITS:
        return n_layers + 1, middle
    assert layer is not None
    return layer + 1, float(head) if kind is NodeKind.ATTENTION and head is not None else float(columns - 1)
