"""Bootstrap intervals of faithfulness over prompts, with known answers: a synthetic noisy task's coverage,
zero width on identical prompts, the full-sample value covered on the toy, and no extra forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circat.service.bootstrap import DEFAULT_BOOTSTRAP, faithfulness_interval
from circat.service.catalogue import Catalogue
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.jobs.spec import DiscoverySpec
from circat.service.types import Ablation, Level, Method, Metric
from circat.workers.discover import prompts_for, run_discovery
from circat.workers.engine.functional import evaluate_selections
from circat.workers.engine.patching import PatchingEngine
from circat.workers.evaluation import prepare, records_of, run_evaluation


def test_identical_prompts_give_an_interval_of_zero_width():
    same = faithfulness_interval(np.full(64, 1.4), np.full(64, 2.0), np.full(64, 0.4), 500)
    assert same is not None and same.low == pytest.approx(0.625) and same.high == pytest.approx(0.625)
    assert faithfulness_interval(np.ones(8), np.ones(8), np.ones(8)) is None  # full = empty: no faithfulness
    assert faithfulness_interval(np.ones(8), np.ones(8), np.zeros(8), samples=0) is None
    with pytest.raises(ValueError, match="alike in length"):
        faithfulness_interval(np.ones(8), np.ones(7), np.zeros(8))


def test_the_interval_covers_the_truth_at_its_level_on_a_noisy_task():
    """A planted task: per prompt, the circuit's metric is 0.7 of the way from empty to full plus noise, so the
    true faithfulness is 0.7; 200 repetitions of 64 fresh prompts each."""
    rng = np.random.default_rng(0)
    hits = 0
    for rep in range(200):
        full = rng.normal(3.0, 1.0, 64)
        empty = rng.normal(0.5, 0.5, 64)
        circuit = empty + 0.7 * (full - empty) + rng.normal(0.0, 0.8, 64)
        interval = faithfulness_interval(circuit, full, empty, 1000, seed=rep)
        assert interval is not None
        hits += interval.low <= 0.7 <= interval.high
    assert 0.90 <= hits / 200 <= 0.98


@pytest.mark.parametrize("expression,level", [("heads(L2-L3) | m3", Level.NODE),
                                              ("input->a3.h0<v>, a3.h0->logits, input->logits", Level.EDGE)])
def test_evaluations_carry_an_interval_around_their_value_at_no_extra_pass(sqlite_store, expression, level):
    cat = Catalogue(sqlite_store)
    spec = EvaluationSpec(expressions=(expression,), model="toy", task="months", level=level, n=32)
    run = run_evaluation(spec, cat)
    (r,) = run.results
    assert r.interval is not None and r.interval.low <= r.value <= r.interval.high and r.interval.low < r.interval.high
    plain = run_evaluation(EvaluationSpec(**spec.model_dump() | {"bootstrap": 0}), cat).results[0]
    assert plain.interval is None and plain.value == r.value  # the same number, to the bit
    (record,) = records_of(run)
    cat.add_evaluations([record])
    stored = cat.evaluations()[0][0]
    assert (stored.low, stored.high) == (r.interval.low, r.interval.high)
    ready = prepare(spec, cat)
    calls = {"passes": 0}
    for name in ("run_nodes", "run_edges"):
        run_masks = getattr(ready.engine, name)

        def counted(keep, run_masks=run_masks):
            calls["passes"] += 1
            return run_masks(keep)
        setattr(ready.engine, name, counted)
    evaluate_selections(ready.engine, ready.selections, bootstrap=0)
    without = calls["passes"]
    evaluate_selections(ready.engine, ready.selections, bootstrap=500)
    assert calls["passes"] - without == without  # a bootstrap of 500 makes the same passes as none


@pytest.mark.parametrize("method", [Method.ABLATION, Method.EAP_IG])
def test_discovered_circuits_store_the_interval_of_an_independent_per_prompt_evaluation(method):
    spec = DiscoverySpec.parse({"model": "toy", "task": "months", "method": method, "levels": [0.8], "n": 16})
    run = run_discovery(spec)
    (circuit,) = run.circuits
    stored = circuit.annotations["evaluation"]["faithfulness_interval"]
    prompts = prompts_for("toy", "months", None, 16, 0, "float32", "cpu")
    engine = PatchingEngine(prompts.model, prompts.batch, Ablation.RESAMPLE, Metric.LOGIT_DIFF)
    graph = engine.layout.graph
    if method is Method.ABLATION:
        masks = np.stack([circuit.node_mask, np.ones(graph.n_nodes, bool), ~graph.component_mask])
        values = engine.evaluate_nodes(torch.as_tensor(masks, dtype=torch.float32), per_prompt=True)
    else:
        masks = np.stack([circuit.edge_mask, np.ones(graph.n_edges, bool), np.zeros(graph.n_edges, bool)])
        values = engine.evaluate_edges(torch.as_tensor(masks, dtype=torch.float32), per_prompt=True)
    expected = faithfulness_interval(*values.double().numpy(), DEFAULT_BOOTSTRAP)
    assert expected is not None and (stored["low"], stored["high"]) == (pytest.approx(expected.low, abs=1e-6),
                                                                        pytest.approx(expected.high, abs=1e-6))
    assert stored["low"] <= circuit.provenance.faithfulness <= stored["high"] and stored["samples"] == 200
