"""Canonical names and the computation graph (known counts from REFERENCE.md section 1)."""

from __future__ import annotations

import numpy as np
import pytest

from service.graph import graph_for
from service.types import Edge, InvalidName, ModelShape, Node, NodeKind, Port


def test_gpt2_small_has_158_nodes_and_32491_edges():
    g = graph_for(ModelShape(12, 12))
    assert g.n_nodes == 158
    assert g.n_edges == 32_491
    sources = set(g.edge_src.tolist())
    assert len(sources) == 157  # input, 144 heads, 12 MLPs
    dests = {(int(d), e.port) for d, e in zip(g.edge_dst, g.edges, strict=True)}
    assert len(dests) == 445  # 432 q/k/v, 12 MLPs, logits


def test_edges_run_forwards_and_heads_feed_their_own_layers_mlp():
    g = graph_for(ModelShape(2, 2))
    assert "a0.h1->m0" in g.edge_index
    assert "m0->a1.h0<k>" in g.edge_index
    assert "a1.h0->a1.h1<q>" not in g.edge_index
    assert "m1->m0" not in g.edge_index
    assert (g.edge_src < g.edge_dst).all()


def test_parallel_attention_mlp_drops_same_layer_head_to_mlp_edges():
    serial, parallel = graph_for(ModelShape(6, 8)), graph_for(ModelShape(6, 8, True))
    assert serial.n_edges - parallel.n_edges == 6 * 8
    assert "a0.h0->m0" not in parallel.edge_index


@pytest.mark.parametrize("name", ["input", "logits", "a10.h3", "m7"])
def test_node_names_round_trip(name):
    assert Node.parse(name).name == name


@pytest.mark.parametrize("name", ["input->a0.h0<q>", "a0.h3->a2.h5<v>", "a3.h1->m5", "m11->logits"])
def test_edge_names_round_trip(name):
    assert Edge.parse(name).name == name


@pytest.mark.parametrize("name", ["a1.h2->a3.h0", "m1->m2<q>", "a1->m2", "x->y", "a1.h1-->m2"])
def test_malformed_edge_names_are_refused(name):
    with pytest.raises(InvalidName):
        Edge.parse(name)


def test_edge_parse_gives_kinds_and_ports():
    e = Edge.parse("a0.h3->a2.h5<v>")
    assert e.src == Node(NodeKind.ATTENTION, 0, 3) and e.dst == Node(NodeKind.ATTENTION, 2, 5)
    assert e.port is Port.V


def test_why_not_edge_names_the_reason():
    g = graph_for(ModelShape(2, 2))
    assert "backwards" in g.why_not_edge("m1->a0.h0<q>")
    assert "not in this model" in g.why_not_edge("a5.h0->logits")


def test_endpoint_mask_marks_both_ends():
    g = graph_for(ModelShape(2, 2))
    mask = np.zeros(g.n_edges, dtype=bool)
    mask[g.edge_id("a0.h1->a1.h0<v>")] = True
    assert [g.node_names[i] for i in np.flatnonzero(g.endpoint_mask(mask))] == ["a0.h1", "a1.h0"]
