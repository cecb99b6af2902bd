"""ACDC: the batched engine version equals a deliberately naive one-edge-at-a-time implementation of the
sequential algorithm, on random tiny GPT-2 and GQA Llama models and on the toy model; and it runs as a method."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from circat.service.types import Ablation
from circat.workers.discover import prompts_for
from circat.workers.engine.acdc import acdc
from circat.workers.engine.evaluate import EdgeEvaluator
from circat.workers.engine.patching import PatchingEngine
from circat.workers.tasks import Metric
from circat.workers.tasks.encode import encode
from tests.test_discover_cli import run
from tests.test_engine import NUMERALS


def naive_acdc(engine: PatchingEngine, tau: float) -> np.ndarray:
    """The sequential algorithm as written: every trial its own masked forward of one mask."""
    graph = engine.layout.graph

    def loss(keep: np.ndarray) -> float:
        value = float(engine.evaluate_edges(torch.as_tensor(keep[None], dtype=torch.float32))[0])
        return value if engine.metric is Metric.KL else full - value

    full = float(engine.evaluate_edges(torch.ones((1, graph.n_edges)))[0])
    keep = np.ones(graph.n_edges, dtype=bool)
    current = loss(keep)
    for slot in reversed(range(len(graph.dests))):
        start, stop = int(graph.slot_start[slot]), int(graph.slot_start[slot + 1])
        node = int(graph.edge_dst[start])
        if node != graph.n_nodes - 1 and not any(keep[e] for e in range(graph.n_edges) if graph.edge_src[e] == node):
            keep[start:stop] = False
            continue
        for edge in reversed(range(start, stop)):
            trial = keep.copy()
            trial[edge] = False
            if (value := loss(trial)) - current < tau:
                keep, current = trial, value
    return keep


def _taus(engine: PatchingEngine) -> list[float]:
    """Two thresholds that keep some edges and remove others: quantiles of the harms a tau-0 run measured."""
    harm = acdc(EdgeEvaluator(engine), 0.0).harm
    tried = np.abs(harm[np.isfinite(harm)])
    return [float(np.quantile(tried, 0.5)), float(np.quantile(tried, 0.9))]


@pytest.mark.parametrize("metric", [Metric.KL, Metric.LOGIT_DIFF])
def test_acdc_equals_the_naive_sequential_algorithm_on_tiny_models(tiny, metric):
    engine = PatchingEngine(tiny, encode(NUMERALS.examples(6, seed=0), tiny.tokenizer), Ablation.RESAMPLE, metric)
    for tau in _taus(engine):
        fast = acdc(EdgeEvaluator(engine), tau)
        expected = naive_acdc(engine, tau)
        assert np.array_equal(fast.keep, expected), tau
        assert 0 < fast.keep.sum() < fast.keep.size
        assert fast.tried <= fast.masks and fast.passes <= fast.masks


def test_acdc_equals_the_naive_algorithm_on_the_toy_model_and_shares_work_across_thresholds():
    prompts = prompts_for("toy", "months", None, 8, 0, "float32", "cpu")
    engine = PatchingEngine(prompts.model, prompts.batch, Ablation.RESAMPLE, Metric.KL)
    evaluator = EdgeEvaluator(engine)
    taus = _taus(engine)
    found = [acdc(evaluator, tau) for tau in taus]
    for tau, result in zip(taus, found, strict=True):
        assert np.array_equal(result.keep, naive_acdc(engine, tau)), tau
    assert evaluator.evaluations < sum(r.masks for r in found)  # the runs shared memoised evaluations
    assert found[0].keep.sum() >= found[1].keep.sum()  # a higher threshold removes more here
    with pytest.raises(ValueError, match="tau"):
        acdc(evaluator, -1.0)


def test_acdc_runs_as_a_method_with_one_circuit_per_threshold():
    out = json.loads(run("discover", "--model", "toy", "--task", "months", "--method", "acdc", "--tau", "0.01",
                         "--tau", "0.05", "--n", "8", "--json").stdout)
    assert [c["key"] for c in out["circuits"]] == ["tau-0.01", "tau-0.05"]
    assert all(c["edges"] > 0 and c["faithfulness"] is not None for c in out["circuits"])
    assert out["circuits"][0]["edges"] >= out["circuits"][1]["edges"]
    assert "cpr" in out["summary"]
    refused = run("discover", "--model", "toy", "--task", "months", "--method", "eap", "--tau", "0.1", "--json",
                  ok=False)
    assert "taus applies to acdc" in refused.stdout
    refused = run("discover", "--model", "toy", "--task", "months", "--method", "acdc", "--threshold", "0.8",
                  "--json", ok=False)
    assert "levels and top_n do not apply" in refused.stdout
