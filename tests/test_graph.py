"""Canonical names and the computation graph (known counts from REFERENCE.md section 1)."""

from __future__ import annotations

import numpy as np
import pytest

from circat.service.graph import edge_count, graph_for, node_count
from circat.service.types import Edge, InvalidName, ModelShape, Node, NodeKind, Port


def test_gpt2_small_has_158_nodes_and_32491_edges():
    g = graph_for(ModelShape(12, 12))
    assert g.n_nodes == 158
    assert g.n_edges == 32_491
    sources = set(g.edge_src.tolist())
    assert len(sources) == 157  # input, 144 heads, 12 MLPs
    dests = {(int(g.edge_dst[i]), g.edge(i).port) for i in range(g.n_edges)}
    assert len(dests) == 445  # 432 q/k/v, 12 MLPs, logits


def test_edges_run_forwards_and_heads_feed_their_own_layers_mlp():
    g = graph_for(ModelShape(2, 2))
    assert g.find_edge("a0.h1->m0") is not None
    assert g.find_edge("m0->a1.h0<k>") is not None
    assert g.find_edge("a1.h0->a1.h1<q>") is None
    assert g.find_edge("m1->m0") is None
    assert (g.edge_src < g.edge_dst).all()


def test_parallel_attention_mlp_drops_same_layer_head_to_mlp_edges():
    serial, parallel = graph_for(ModelShape(6, 8)), graph_for(ModelShape(6, 8, True))
    assert serial.n_edges - parallel.n_edges == 6 * 8
    assert parallel.find_edge("a0.h0->m0") is None


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


@pytest.mark.parametrize("shape", [ModelShape(12, 12), ModelShape(3, 2, True), ModelShape(1, 1), ModelShape(5, 7)])
def test_names_and_indices_convert_both_ways_in_edge_order(shape):
    g = graph_for(shape)
    names = list(g.iter_edge_names())
    assert len(names) == g.n_edges == len(set(names))
    assert [g.find_edge(n) for n in names] == list(range(g.n_edges))
    assert [g.edge_name(i) for i in range(g.n_edges)] == names
    assert [g.edge(i).name for i in range(0, g.n_edges, 7)] == names[::7]
    for i in range(0, g.n_edges, 11):
        e = g.edge(i)
        assert (g.node_names[g.edge_src[i]], g.node_names[g.edge_dst[i]]) == (e.src.name, e.dst.name)


@pytest.mark.parametrize("shape", [ModelShape(12, 12), ModelShape(6, 8, True), ModelShape(4, 4), ModelShape(32, 32)])
def test_edge_count_in_closed_form_equals_the_built_graph(shape):
    assert edge_count(shape) == graph_for(shape).n_edges
    assert node_count(shape) == graph_for(shape).n_nodes


def test_edge_count_of_an_absurd_shape_is_instant_and_exact():
    assert edge_count(ModelShape(32, 32)) == 1_592_881  # Llama-3.1-8B-shaped
    assert edge_count(ModelShape(68_719_476_736, 1000)) > 10**24
