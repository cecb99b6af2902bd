"""The circuit: provenance plus boolean membership and float scores over a model graph.

State is held as vectors over the graph's node and edge orders (``service.graph``); the
object offers thin named views. A node-only circuit has ``edge_mask is None``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np

from circat.service.graph import ModelGraph, graph_for
from circat.service.types import Level, ModelShape


@dataclass(frozen=True)
class Provenance:
    """Where a circuit comes from and how good it is."""

    model: str
    task: str
    method: str
    task_family: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metric: str | None = None
    faithfulness: float | None = None
    citation: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def identity(self) -> dict[str, Any]:
        """The fields that make a circuit what it is (creation time excluded)."""
        return {
            "model": self.model,
            "task": self.task,
            "task_family": self.task_family,
            "method": self.method,
            "params": self.params,
            "metric": self.metric,
            "faithfulness": self.faithfulness,
            "citation": self.citation,
        }


@dataclass(frozen=True, eq=False)
class Circuit:
    """A validated circuit. Build one with ``service.documents`` or ``Circuit.of``."""

    provenance: Provenance
    shape: ModelShape
    node_mask: np.ndarray
    node_scores: np.ndarray
    edge_mask: np.ndarray | None = None
    edge_scores: np.ndarray | None = None
    node_extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)

    @property
    def graph(self) -> ModelGraph:
        return graph_for(self.shape)

    @property
    def has_edges(self) -> bool:
        return self.edge_mask is not None

    @cached_property
    def id(self) -> str:
        """Deterministic id from content and provenance (not creation time)."""
        return _content_id(self)

    @property
    def node_names(self) -> list[str]:
        names = self.graph.node_names
        return [names[i] for i in np.flatnonzero(self.node_mask)]

    @property
    def edge_names(self) -> list[str]:
        if self.edge_mask is None:
            return []
        return self.graph.names(Level.EDGE, np.flatnonzero(self.edge_mask))

    @property
    def component_mask(self) -> np.ndarray:
        """Heads and MLPs in the circuit (``input``/``logits`` excluded)."""
        return self.node_mask & self.graph.component_mask

    @property
    def n_nodes(self) -> int:
        return int(self.component_mask.sum())

    @property
    def n_edges(self) -> int:
        return 0 if self.edge_mask is None else int(self.edge_mask.sum())

    @staticmethod
    def of(
        provenance: Provenance,
        shape: ModelShape,
        nodes: dict[str, float | None] | list[str],
        edges: dict[str, float | None] | list[str] | None = None,
    ) -> Circuit:
        """Build a circuit from in-graph names (optionally with scores); validates."""
        from circat.service.documents import CircuitDocument, circuit_from_document

        def items(named: dict[str, float | None] | list[str]) -> dict[str, dict[str, Any]]:
            pairs = named.items() if isinstance(named, dict) else ((n, None) for n in named)
            return {n: {"in_graph": True, "score": s} for n, s in pairs}

        doc = CircuitDocument(
            model=provenance.model,
            shape=shape.__dict__,
            task=provenance.task,
            task_family=provenance.task_family,
            method=provenance.method,
            params=provenance.params,
            metric=provenance.metric,
            faithfulness=provenance.faithfulness,
            citation=provenance.citation,
            created_at=provenance.created_at,
            nodes=items(nodes),
            edges=None if edges is None else items(edges),
        )
        return circuit_from_document(doc)


CIRCUIT_ID = "c[0-9a-f]{23}"
"""Every circuit id: ``c`` and 23 hex digits of the content hash."""


def _content_id(c: Circuit) -> str:
    h = hashlib.sha256()
    head = {"shape": c.shape.__dict__, "provenance": c.provenance.identity()}
    head |= {"node_extra": c.node_extra, "annotations": c.annotations}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for arr in (c.node_mask, c.node_scores, c.edge_mask, c.edge_scores):
        h.update(b"|" if arr is None else np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
    return "c" + h.hexdigest()[:23]
