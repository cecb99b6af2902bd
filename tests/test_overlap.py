"""The overlap algebra on hand-made memberships with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from circat.service.graph import graph_for
from circat.service.overlap import OverlapError, consensus, difference, matrix, pairwise
from circat.service.stores.base import Membership
from circat.service.types import Level
from tests.helpers import SMALL

G = graph_for(SMALL)


def member(cid: str, nodes: list[str], edges: list[str] | None = None, model: str = "tiny") -> Membership:
    node_mask = np.zeros(G.n_nodes, dtype=bool)
    node_mask[[G.node_id(n) for n in nodes]] = True
    e = None
    if edges is not None:
        e = np.array(sorted(G.edge_id(x) for x in edges), dtype=np.int64)
        node_mask[G.edge_src[e]] = node_mask[G.edge_dst[e]] = True
    return Membership(cid, model, SMALL, np.flatnonzero(node_mask), e)


A = member("A", ["input", "a0.h0", "a1.h0", "m1", "logits"])
B = member("B", ["a0.h0", "m1", "a2.h1"])
C = member("C", ["m1"])


def test_pairwise_jaccard_and_containment_ignore_input_and_logits():
    (p,) = pairwise(A, B)
    assert p.level is Level.NODE
    assert (p.size_a, p.size_b, p.shared) == (3, 3, ["a0.h0", "m1"])
    assert p.jaccard == pytest.approx(2 / 4)
    assert p.a_in_b == pytest.approx(2 / 3) and p.b_in_a == pytest.approx(2 / 3)


def test_consensus_with_support_counts():
    (all3,) = consensus([A, B, C])
    assert all3.support == {"m1": 3}
    (two,) = consensus([A, B, C], min_support=2)
    assert two.support == {"m1": 3, "a0.h0": 2}
    assert list(two.support) == ["m1", "a0.h0"]


def test_consensus_rejects_bad_support():
    with pytest.raises(OverlapError, match="between 1 and 3"):
        consensus([A, B, C], min_support=4)


def test_matrix_is_symmetric_with_unit_diagonal():
    m = matrix([A, B, C])
    assert m.node[0][1] == m.node[1][0] == pytest.approx(0.5)
    assert m.node[1][2] == pytest.approx(1 / 3)
    assert [m.node[i][i] for i in range(3)] == [1.0, 1.0, 1.0]
    assert m.edge[0][1] is None


def test_difference():
    assert difference(A, B) == {Level.NODE: ["a1.h0"]}
    assert difference(C, A) == {Level.NODE: []}


def test_edge_level_only_when_both_have_edges():
    e1 = member("E1", [], ["a0.h0->a1.h0<q>", "a1.h0->m1", "m1->logits"])
    e2 = member("E2", [], ["a0.h0->a1.h0<q>", "m1->logits", "input->m0"])
    _, edge = pairwise(e1, e2)
    assert edge.level is Level.EDGE and edge.shared == ["a0.h0->a1.h0<q>", "m1->logits"]
    assert edge.jaccard == pytest.approx(2 / 4)
    assert [p.level for p in pairwise(e1, C)] == [Level.NODE]
    assert pairwise(e1, C)[0].shared == ["m1"]


def test_different_models_cannot_be_compared():
    with pytest.raises(OverlapError, match="different models"):
        pairwise(A, member("X", ["m1"], model="other"))
