"""Resampled discovery and its stability summary: known answers for the pure parts, the toy model end to end
(CLI, job, REST), and the run comparison an overlap answer carries."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from circat.service.api.app import create_app
from circat.service.catalogue import Catalogue
from circat.service.graph import graph_for
from circat.service.jobs.spec import DiscoverySpec
from circat.service.overlap import OverlapError
from circat.service.stability import _gaps, compare_runs, level_key, spread
from circat.service.stores import CircuitFilter, open_store
from circat.service.stores.base import Membership
from circat.service.types import Level
from tests.helpers import GPT2
from tests.test_discover_cli import run

R = 5


def _nodes(*sets: list[int]) -> list[Membership]:
    """Node-only memberships of component index sets of GPT-2 small."""
    comps = np.flatnonzero(graph_for(GPT2).component_mask)
    return [Membership(f"c{i}", "gpt2", GPT2, comps[list(s)], None) for i, s in enumerate(sets)]


def test_spread_and_level_keys_have_known_answers():
    grid = np.array([[1, 0.5, 0.2], [0.5, 1, 0.8], [0.2, 0.8, 1]])
    s = spread(grid)
    assert (s.mean, s.min, s.max, s.pairs) == (pytest.approx(0.5), 0.2, 0.8, 3)
    assert s.std == pytest.approx(np.std([0.5, 0.2, 0.8]))
    assert spread(np.ones((1, 1))).pairs == 0
    assert [level_key(p) for p in ({"level": 0.8, "top_n": 40}, {"top_n": 100}, {})] == ["0.8", "top-100", "circuit"]


def test_run_comparison_known_answers():
    apart = compare_runs(_nodes(*[range(4)] * 4), _nodes(*[range(4, 8)] * 4), Level.NODE, ("sa", "sb"))
    # 70 splits of 8 circuits into 4 + 4: only the observed one and its mirror separate the two sets
    assert (apart.between, apart.within_a, apart.within_b, apart.low, apart.high) == (0, 1, 1, 0, 0)
    assert apart.p == pytest.approx(2 / 70) and apart.differ and apart.pairs == 16
    three = compare_runs(_nodes(*[range(4)] * 3), _nodes(*[range(4, 8)] * 3), Level.NODE, ("sa", "sb"))
    assert three.p == pytest.approx(2 / 20) and not three.differ  # 3 + 3 resamples cannot reach p < 0.05
    alike = compare_runs(_nodes(*[range(5)] * 3), _nodes(*[range(5)] * 3), Level.NODE, ("sa", "sb"))
    assert (alike.between, alike.p, alike.differ) == (1, 1, False)
    with pytest.raises(OverlapError, match="at least 2"):
        compare_runs(_nodes(range(3)), _nodes(range(3), range(4)), Level.NODE, ("sa", "sb"))


def test_permutation_gaps_equal_a_brute_force_mean_over_pairs():
    rng = np.random.default_rng(0)
    sets = [rng.choice(20, size=rng.integers(3, 12), replace=False) for _ in range(7)]
    members = _nodes(*sets)
    grid = np.array([[len(np.intersect1d(a, b)) / len(np.union1d(a, b)) for b in sets] for a in sets])
    for group in [(0, 1, 2), (1, 4, 6), (0, 3, 5)]:
        labels = np.zeros((1, 7))
        labels[0, list(group)] = 1
        rest = [i for i in range(7) if i not in group]
        within = [grid[i, j] for g in (group, rest) for i, j in itertools.combinations(g, 2)]
        between = [grid[i, j] for i in group for j in rest]
        assert _gaps(grid, labels, 3, 4)[0] == pytest.approx(np.mean(within) - np.mean(between))
    shuffled = compare_runs(members[:3], members[3:], Level.NODE, ("sa", "sb"), permutations=10)
    assert 0 < shuffled.p <= 1  # 35 splits >= 10 permutations: drawn at random


def test_a_spec_of_one_resample_keeps_its_hash_and_seeds_must_fit():
    spec = DiscoverySpec.parse({"model": "toy", "task": "months", "method": "eap-ig"})
    assert "resamples" not in spec.canonical_json()
    five = spec.model_copy(update={"resamples": 5})
    assert five.spec_hash() != spec.spec_hash() and five.resample(3).seed == 3
    assert five.resample(0).spec_hash() == spec.spec_hash()  # resample 0 is the plain run
    with pytest.raises(ValueError, match="seed \\+ resamples"):
        DiscoverySpec.parse({"model": "toy", "task": "months", "method": "eap", "seed": 2**31 - 2, "resamples": 3})


def test_resampled_eap_ig_stores_its_circuits_and_a_summary_the_overlap_algebra_agrees_with(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    out = json.loads(run("discover", "--model", "toy", "--task", "months", "--method", "eap-ig", "--threshold", "0.8",
                         "--n", "16", "--resamples", str(R), "--store", url, "--json").stdout)
    ids = [c["id"] for c in out["circuits"]]
    assert len(set(ids)) == R and [c["seed"] for c in out["circuits"]] == list(range(R))
    with open_store(url) as store:
        cat = Catalogue(store)
        assert store.summaries(CircuitFilter(), 100)[1] == R
        (record,), total = cat.stabilities()
        assert total == 1 and record.id == out["stability"]["id"] and record.seeds == tuple(range(R))
        (level,) = record.levels
        assert level.key == "0.8" and list(level.circuits) == ids
        for at in (Level.NODE, Level.EDGE):
            pairs = [next(p for p in cat.overlap(a, b) if p.level is at) for a, b in itertools.combinations(ids, 2)]
            assert all(p.runs is None for p in pairs)  # resamples of one run: no run comparison
            jaccards = [p.jaccard for p in pairs]
            s = level.node if at is Level.NODE else level.edge
            assert s.mean == pytest.approx(np.mean(jaccards), abs=1e-12) and s.pairs == 10
            assert (s.min, s.max) == (pytest.approx(min(jaccards)), pytest.approx(max(jaccards)))
            (support,) = [c for c in cat.consensus(ids, min_support=1) if c.level is at]
            assert level.frequency_of(at) == {k: v / R for k, v in support.support.items()}
        for c in map(cat.get, ids):
            low, high = (c.annotations["evaluation"]["faithfulness_interval"][k] for k in ("low", "high"))
            assert low <= c.provenance.faithfulness <= high
    page = tmp_path / "r.html"
    run("report", ids[0], "--out", str(page), "--store", url)
    shaded = dict(re.findall(r'data-name="([^"]+)"[^>]*data-frequency="([0-9.]+)"', page.read_text()))
    assert shaded and {k: float(v) for k, v in shaded.items()} == {
        k: pytest.approx(v, abs=1e-3) for k, v in level.node_frequency.items() if k in cat_nodes(url, ids[0])}
    shown = run("stability", ids[2], "--store", url).stdout
    assert record.id in shown and "pairwise Jaccard" in shown
    assert json.loads(run("stability", record.id, "--store", url, "--json").stdout)["levels"][0]["circuits"] == ids


def cat_nodes(url: str, circuit_id: str) -> list[str]:
    with open_store(url) as store:
        return store.get(circuit_id).node_names


def test_two_resampled_runs_compare_in_the_overlap_answer_over_cli_and_rest(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    runs = {task: json.loads(run("discover", "--model", "toy", "--task", task, "--method", "ablation", "--threshold",
                                 "0.8", "--n", "8", "--resamples", "3", "--store", url, "--json").stdout)
            for task in ("months", "ioi")}
    a, b = (runs[t]["circuits"][0]["id"] for t in ("months", "ioi"))
    (pair,) = json.loads(run("overlap", a, b, "--store", url, "--json").stdout)
    cmp = pair["runs"]
    assert cmp["runs"] == [runs["months"]["stability"]["id"], runs["ioi"]["stability"]["id"]] and cmp["pairs"] == 9
    assert cmp["low"] <= cmp["between"] <= cmp["high"] and cmp["p"] >= 0.1  # 3 + 3: 20 splits, p >= 2/20
    assert "across runs" in run("overlap", a, b, "--store", url).stdout
    with open_store(url) as store:
        api = TestClient(create_app(store))
        answer = api.get("/overlap", params={"a": a, "b": b}).json()
        assert answer["levels"][0]["runs"] == cmp
        listed = api.get("/stability", params={"circuit": b}).json()
        assert listed["total"] == 1 and listed["items"][0]["id"] == cmp["runs"][1]
        one = api.get(f"/stability/{cmp['runs'][0]}").json()
        assert one["levels"][0]["circuits"] == [c["id"] for c in runs["months"]["circuits"]]
        assert api.get("/stability/s" + "0" * 23).status_code == 404
        assert api.get("/stability/nope").status_code == 422
        schemas = api.get("/openapi.json").json()["components"]["schemas"]
        assert "runs" in schemas["PairAnswer"]["properties"] and "RunComparison" in schemas


def test_a_resampled_job_stores_its_summary_on_the_embedded_worker():
    job = json.loads(run("submit", "--model", "toy", "--task", "months", "--method", "eap", "--top-n", "40",
                         "--n", "8", "--resamples", "3", "--wait", "--json").stdout)
    assert job["status"] == "succeeded" and len(job["circuit_ids"]) == 3
    summary = json.loads(run("stability", job["id"], "--json").stdout)
    assert summary["levels"][0]["key"] == "top-40" and summary["levels"][0]["circuits"] == job["circuit_ids"]
    assert summary["seeds"] == [0, 1, 2]
