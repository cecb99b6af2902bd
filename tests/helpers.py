"""Circuit builders for tests: small shapes, random scored edge circuits, MIB files."""

from __future__ import annotations

from typing import Any

import numpy as np

from circat.service.circuit import Circuit, Provenance
from circat.service.graph import graph_for
from circat.service.types import ModelShape

SMALL = ModelShape(3, 2, False, 16)
GPT2 = ModelShape(12, 12, False, 768)


def edge_circuit(shape: ModelShape = SMALL, seed: int = 0, keep: float = 0.3, task: str = "t",
                 model: str = "tiny", method: str = "eap", score_all: bool = False) -> Circuit:
    """A random edge circuit: a random ``keep`` fraction of edges in graph, scores on them (or all)."""
    rng = np.random.default_rng(seed)
    g = graph_for(shape)
    mask = rng.random(g.n_edges) < keep
    mask[0] = True
    scores = rng.normal(size=g.n_edges)
    if not score_all:
        scores[~mask] = np.nan
    return Circuit(
        provenance=Provenance(model=model, task=task, method=method, task_family="fam",
                              params={"seed": seed}, metric="logit_diff", faithfulness=0.5 + seed / 100),
        shape=shape,
        node_mask=g.endpoint_mask(mask),
        node_scores=np.full(g.n_nodes, np.nan),
        edge_mask=mask,
        edge_scores=scores,
    )


def node_circuit(names: list[str], shape: ModelShape = SMALL, task: str = "t", model: str = "tiny") -> Circuit:
    return Circuit.of(Provenance(model=model, task=task, method="ablation"), shape, names)


def mib_file(shape: ModelShape, seed: int = 0, keep: float = 0.1) -> dict[str, Any]:
    """A file as EAP-IG's ``Graph.to_json`` writes it: every node and edge, every edge scored."""
    rng = np.random.default_rng(seed)
    g = graph_for(shape)
    mask = rng.random(g.n_edges) < keep
    nodes_in = g.endpoint_mask(mask)
    cfg = {"n_layers": shape.n_layers, "n_heads": shape.n_heads, "parallel_attn_mlp": shape.parallel_attn_mlp,
           "d_model": shape.d_model}
    return {
        "cfg": cfg,
        "nodes": {n: {"in_graph": bool(nodes_in[i])} for i, n in enumerate(g.node_names)},
        "edges": {e: {"score": float(rng.normal()), "in_graph": bool(mask[i])}
                  for i, e in enumerate(g.iter_edge_names())},
    }


def same_circuit(a: Circuit, b: Circuit) -> None:
    """Assert two circuits hold the same items, scores and provenance."""
    assert a.id == b.id
    assert a.shape == b.shape
    assert a.provenance.identity() == b.provenance.identity()
    assert abs((a.provenance.created_at - b.provenance.created_at).total_seconds()) < 1e-3
    np.testing.assert_array_equal(a.node_mask, b.node_mask)
    np.testing.assert_array_equal(a.node_scores, b.node_scores)
    assert (a.edge_mask is None) == (b.edge_mask is None)
    if a.edge_mask is not None:
        np.testing.assert_array_equal(a.edge_mask, b.edge_mask)
        np.testing.assert_array_equal(a.edge_scores, b.edge_scores)
    assert a.node_extra == b.node_extra
    assert a.annotations == b.annotations
