"""The null models with known answers: exact uniform figures against Monte Carlo, p uniform under the null,
the extremes, the connected sampler's promises, and the null figures in every overlap answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from circat.service.api.app import create_app
from circat.service.catalogue import Catalogue
from circat.service.graph import graph_for
from circat.service.null import NullSpec, consensus_chance, draws, pair_chance, shared_pmf, uniform_pair, universe
from circat.service.null_sampler import connected_draws
from circat.service.report.heatmap import heatmap_svg
from circat.service.types import Level, ModelShape, NullModel
from tests.helpers import GPT2, SMALL, edge_circuit, node_circuit

TOY = ModelShape(4, 4, False, 128)


def _random_sets(rng: np.random.Generator, draws_: int, n: int, size: int) -> np.ndarray:
    """Membership masks of uniform random ``size``-subsets of ``n`` items, by sorting noise."""
    masks = np.zeros((draws_, n), dtype=bool)
    np.put_along_axis(masks, np.argsort(rng.random((draws_, n)), axis=1)[:, :size], True, axis=1)
    return masks


def test_the_exact_expected_jaccard_equals_monte_carlo_within_one_percent():
    n, a, b = 156, 20, 35  # GPT-2 small's components
    rng = np.random.default_rng(0)
    jaccards, shared = [], []
    for _ in range(4):
        x, y = _random_sets(rng, 25_000, n, a), _random_sets(rng, 25_000, n, b)
        k = (x & y).sum(axis=1)
        shared.append(k)
        jaccards.append(k / (a + b - k))
    chance = uniform_pair(n, a, b, 0)
    assert chance.expected_jaccard == pytest.approx(np.concatenate(jaccards).mean(), rel=0.01)
    assert chance.expected_shared == pytest.approx(a * b / n, rel=1e-9)
    assert chance.expected_shared == pytest.approx(np.concatenate(shared).mean(), rel=0.01)
    k, p = shared_pmf(n, a, b)
    assert p.sum() == pytest.approx(1.0) and k[0] == 0 and k[-1] == a


def test_the_tail_probability_is_uniform_under_the_null():
    n, a, b, m = 32_491, 8000, 8000, 1000  # GPT-2 small's edges
    rng = np.random.default_rng(1)
    shared = np.concatenate([(_random_sets(rng, 100, n, a) & _random_sets(rng, 100, n, b)).sum(axis=1)
                             for _ in range(m // 100)])
    p = np.sort([uniform_pair(n, a, b, int(k)).p for k in shared])
    ks = np.max(np.maximum(np.arange(1, m + 1) / m - p, p - np.arange(m) / m))
    assert ks < 1.63 / np.sqrt(m)  # Kolmogorov-Smirnov at the 1 % level
    assert np.mean(p <= 0.05) == pytest.approx(0.05, abs=0.02)


def test_identical_circuits_are_far_above_chance_and_disjoint_ones_are_not():
    assert uniform_pair(156, 20, 20, 20).p < 1e-20
    assert uniform_pair(156, 20, 20, 0).p == pytest.approx(1.0)
    assert uniform_pair(156, 100, 100, 44).p == pytest.approx(1.0)  # 100 + 100 - 156: at least 44 shared
    with pytest.raises(ValueError, match="between 0 and the universe"):
        uniform_pair(10, 11, 2, 0)


def test_the_consensus_null_counts_items_as_independent_circuits_would():
    g = graph_for(GPT2)
    sizes, spec = [30, 40, 25], NullSpec(samples=2000)
    chance = consensus_chance(g, Level.NODE, sizes, 2, 12, spec)
    rng = np.random.default_rng(5)
    support = sum(_random_sets(rng, 20_000, 156, s).astype(int) for s in sizes)
    counts = (support >= 2).sum(axis=1)
    assert chance.expected_shared == pytest.approx(counts.mean(), rel=0.01)
    assert chance.p == pytest.approx(np.mean(counts >= 12), abs=0.03)
    two, pair = consensus_chance(g, Level.NODE, [30, 40], 2, 9, spec), uniform_pair(156, 30, 40, 9)
    assert (two.samples, two.expected_jaccard) == (0, pair.expected_jaccard)
    assert (two.expected_shared, two.p) == pytest.approx((pair.expected_shared, pair.p), rel=1e-9)


def _on_paths(graph, edges: np.ndarray) -> bool:
    """Whether every edge of the set lies on an input -> logits path inside it."""
    src, dst = graph.edge_src[edges], graph.edge_dst[edges]
    reached = np.zeros(graph.n_nodes, dtype=bool)
    reached[0] = True
    for v in range(graph.n_nodes):  # node order is topological
        reached[v] |= bool(reached[src[dst == v]].any())
    reaches = np.zeros(graph.n_nodes, dtype=bool)
    reaches[-1] = True
    for v in reversed(range(graph.n_nodes)):
        reaches[v] |= bool(reaches[dst[src == v]].any())
    return bool(reached[src].all() and reaches[dst].all())


@pytest.mark.parametrize("shape", [SMALL, TOY, GPT2], ids=["small", "toy", "gpt2"])
def test_connected_draws_lie_on_paths_have_the_asked_size_and_repeat_by_seed(shape):
    g = graph_for(shape)
    for size in (1, 2, 7, 40, g.n_edges // 3):
        drawn = connected_draws(g, size, 5, np.random.default_rng(3))
        assert drawn.shape == (5, size)
        for row in drawn:
            assert len(np.unique(row)) == size and _on_paths(g, row)
        assert np.array_equal(drawn, connected_draws(g, size, 5, np.random.default_rng(3)))
    other = connected_draws(g, 40, 5, np.random.default_rng(4))
    assert not np.array_equal(other, connected_draws(g, 40, 5, np.random.default_rng(3)))
    with pytest.raises(ValueError, match="does not fit"):
        connected_draws(g, g.n_edges + 1, 1, np.random.default_rng(0))


def test_connected_random_circuits_overlap_more_than_uniform_ones():
    g = graph_for(TOY)
    connected = NullSpec(NullModel.CONNECTED, samples=300)
    sampled = pair_chance(g, Level.EDGE, 60, 60, 30, connected)
    exact = pair_chance(g, Level.EDGE, 60, 60, 30, NullSpec())
    assert sampled.null is NullModel.CONNECTED and sampled.samples == 300 and exact.samples == 0
    assert sampled.expected_shared > exact.expected_shared  # connected circuits crowd the early, dense nodes
    assert pair_chance(g, Level.NODE, 5, 6, 2, connected) == uniform_pair(universe(g, Level.NODE), 5, 6, 2)
    assert draws(g, Level.EDGE, 60, connected, 0).shape == (300, 60)


def test_every_overlap_answer_carries_its_null(sqlite_store):
    cat = Catalogue(sqlite_store)
    ids = [cat.add(edge_circuit(seed=s, keep=0.2 + 0.1 * s)) for s in range(3)]
    g = graph_for(SMALL)
    for pair in cat.overlap(ids[0], ids[1]):
        n = universe(g, pair.level)
        assert pair.chance == uniform_pair(n, pair.size_a, pair.size_b, pair.n_shared)
    spec = NullSpec(NullModel.CONNECTED, samples=50, seed=2)
    m = cat.matrix(ids, spec)
    edge = next(p for p in cat.overlap(ids[0], ids[2], spec) if p.level is Level.EDGE)
    assert m.null is NullModel.CONNECTED and m.samples == 50
    assert m.edge_expected[0][2] == edge.chance.expected_jaccard and m.edge_p[0][2] == edge.chance.p
    node = cat.overlap(ids[1], ids[2])[0]
    assert m.node_expected[1][2] == node.chance.expected_jaccard and m.node_p[1][2] == node.chance.p
    agreed = cat.consensus(ids, 2)
    assert all(c.chance.samples == 200 and 0 < c.chance.p <= 1 for c in agreed)


def test_the_api_and_cli_give_the_null_and_refuse_too_many_draws(sqlite_store, tmp_path):
    from tests.test_discover_cli import run

    ids = [Catalogue(sqlite_store).add(edge_circuit(seed=s)) for s in range(2)]
    api = TestClient(create_app(sqlite_store))
    levels = api.get("/overlap", params={"a": ids[0], "b": ids[1], "null": "connected", "samples": 20}).json()
    assert [lv["chance"]["null"] for lv in levels["levels"]] == ["uniform", "connected"]
    assert levels["levels"][1]["chance"]["samples"] == 20 and "expected_jaccard" in levels["levels"][1]["chance"]
    schema = api.get("/openapi.json").json()["components"]["schemas"]
    assert {"expected_shared", "expected_jaccard", "p"} <= set(schema["Chance"]["properties"])
    assert "node_p" in schema["Matrix"]["properties"] and "chance" in schema["PairAnswer"]["properties"]
    big = api.get("/matrix", params={"ids": ids, "null": "connected", "samples": 10**9})
    assert big.status_code in (413, 422) and "null-model cells" in big.json()["detail"]
    assert api.get("/overlap", params={"a": ids[0], "b": ids[1], "null": "random"}).status_code == 422
    store = f"sqlite:///{tmp_path / 'cli.db'}"
    with_cli = [json.loads(run("import", str(_saved(tmp_path, s)), "--store", store, "--json").stdout)
                for s in range(2)]
    cids = [r[0]["id"] for r in with_cli]
    out = json.loads(run("overlap", *cids, "--store", store, "--json").stdout)
    assert out[0]["chance"]["null"] == "uniform" and out[0]["chance"]["p"] <= 1
    text = run("matrix", *cids, "--store", store).output
    assert "expected by chance" in text


def _saved(tmp_path, seed: int):
    from circat.service.documents import document_from_circuit

    path = tmp_path / f"c{seed}.json"
    path.write_text(document_from_circuit(edge_circuit(seed=seed)).model_dump_json())
    return path


def test_the_heatmap_greys_cells_that_are_not_above_chance():
    svg = heatmap_svg(["a", "b"], [[1.0, 0.2], [0.2, 1.0]], "node Jaccard", [[1e-9, 0.3], [0.3, 1e-9]],
                      [[0.1, 0.18], [0.18, 0.1]])
    assert svg.count('data-chance="1"') == 2 and "not above chance: p = 0.3, expected 0.18" in svg
    assert 'data-chance' not in heatmap_svg(["a", "b"], [[1.0, 0.2], [0.2, 1.0]], "node Jaccard")


def test_items_held_by_every_circuit_have_an_exact_null():
    g = graph_for(GPT2)
    sizes = [25, 12, 31, 18]
    chance = consensus_chance(g, Level.NODE, sizes, 4, 1, NullSpec())
    rng = np.random.default_rng(9)
    support = sum(_random_sets(rng, 50_000, 156, s).astype(int) for s in sizes)
    counts = (support == 4).sum(axis=1)
    assert chance.samples == 0 and chance.expected_shared == pytest.approx(156 * np.prod(np.array(sizes) / 156))
    assert chance.p == pytest.approx(np.mean(counts >= 1), abs=0.005)


def test_only_draws_count_against_the_null_limit(sqlite_store):
    """Exact figures draw nothing, so a model too large for sampled nulls still answers the default questions."""
    from circat.service.errors import LimitExceeded
    from circat.service.limits import Limits

    cat = Catalogue(sqlite_store, Limits(max_null_cells=10))
    ids = [cat.add(edge_circuit(seed=s)) for s in range(3)]
    assert cat.overlap(ids[0], ids[1])[1].chance.samples == 0
    assert cat.matrix(ids).samples == 0 and cat.consensus(ids)[0].chance.samples == 0
    nodes = [cat.add(node_circuit(names)) for names in (["a0.h0", "m1"], ["a0.h0", "a1.h1"])]
    assert cat.overlap(*nodes, NullSpec(NullModel.CONNECTED))[0].chance.samples == 0  # node level: exact
    for drawn in (lambda: cat.overlap(ids[0], ids[1], NullSpec(NullModel.CONNECTED)),
                  lambda: cat.matrix(ids, NullSpec(NullModel.CONNECTED))):
        with pytest.raises(LimitExceeded, match="null-model cells"):
            drawn()
    with pytest.raises(LimitExceeded, match="null-model cells"):
        cat.consensus(ids, min_support=2)
