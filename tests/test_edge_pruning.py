"""Learned edge masks: hard-concrete gates with known answers, the differentiable masked run equal to the plain
one, a resumed run equal to an uninterrupted one, and the method end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from circat.service.types import Ablation, Gate
from circat.workers.engine.corrections import Deltas, weighted
from circat.workers.engine.edge_pruning import (
    BETA,
    HIGH,
    LOW,
    PruningConfig,
    _kept_share,
    _sample,
    train_gates,
    warm_start,
)
from circat.workers.engine.evaluate import EdgeEvaluator
from circat.workers.engine.patching import PatchingEngine
from circat.workers.tasks.encode import encode
from tests.test_discover_cli import run
from tests.test_engine import NUMERALS


def test_hard_concrete_gates_have_their_known_distribution():
    log_alpha = torch.tensor([-3.0, 0.0, 2.0])
    generator = torch.Generator().manual_seed(1)
    draws = torch.stack([_sample(log_alpha, Gate.HARD_CONCRETE, generator) for _ in range(20000)])
    nonzero = (draws > 0).double().mean(0)
    closed = torch.sigmoid(log_alpha - BETA * math.log(-LOW / HIGH))
    assert nonzero.tolist() == pytest.approx(closed.tolist(), abs=0.01)  # P(z > 0), Louizos et al.'s closed form
    assert float(_kept_share(log_alpha, Gate.HARD_CONCRETE)) == pytest.approx(float(closed.mean()))
    assert _sample(log_alpha, Gate.SIGMOID, torch.Generator()).tolist() == torch.sigmoid(log_alpha).tolist()
    ranks = warm_start(np.array([0.1, -5.0, 0.0, 2.0]))
    assert ranks.tolist() == pytest.approx([1.5, 3.5, 0.5, 2.5])


def test_the_differentiable_masked_run_equals_the_plain_one(tiny):
    engine = PatchingEngine(tiny, encode(NUMERALS.examples(4, seed=0), tiny.tokenizer), Ablation.RESAMPLE)
    keep = torch.as_tensor(np.random.default_rng(0).random((2, engine.layout.graph.n_edges)) > 0.5,
                           dtype=torch.float32)
    with torch.enable_grad():
        soft = engine.masked_logits(keep.clone().requires_grad_(True))
    assert torch.allclose(soft.detach(), engine.run_edges(keep), atol=1e-5)
    half = torch.full((1, engine.layout.graph.n_edges), 0.5)
    ends = engine.run_edges(torch.stack([torch.ones_like(half[0]), torch.zeros_like(half[0])]))
    assert not torch.allclose(engine.masked_logits(half)[0], ends[0]) and not torch.allclose(
        engine.masked_logits(half)[0], ends[1])


def test_the_gradient_of_a_masked_run_is_its_finite_difference_alone_or_beside_another_mask(tiny):
    """The mask's gradient through the whole run (sums written into reused buffers, added in place to the
    bridge's per-head forks) against a central difference along a random direction; in a run of two masks
    (another path through the forks), each mask's gradient is the one it has alone."""
    engine = PatchingEngine(tiny, encode(NUMERALS.examples(4, seed=0), tiny.tokenizer), Ablation.RESAMPLE)
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(2, engine.layout.graph.n_edges, generator=g)
    direction = torch.randn(keep[:1].shape, generator=g)

    def metric(k: torch.Tensor) -> torch.Tensor:
        return engine.metric_of(engine.masked_logits(k)).sum()

    def gradient(k: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            k = k.clone().requires_grad_(True)
            metric(k).backward()
        assert k.grad is not None
        return k.grad

    alone, eps = gradient(keep[:1]), 1e-2
    numeric = (metric(keep[:1] + eps * direction) - metric(keep[:1] - eps * direction)) / (2 * eps)
    assert float((alone * direction).sum()) == pytest.approx(float(numeric), rel=1e-2)
    assert torch.allclose(gradient(keep)[:1], alone, atol=1e-6)


def test_a_masked_run_reusing_the_buffers_before_a_differentiable_runs_backward_is_refused(tiny):
    engine = PatchingEngine(tiny, encode(NUMERALS.examples(4, seed=0), tiny.tokenizer), Ablation.RESAMPLE)
    keep = torch.full((1, engine.layout.graph.n_edges), 0.5, requires_grad=True)
    with torch.enable_grad():
        first = engine.masked_logits(keep).sum()
        engine.run_edges(torch.zeros_like(keep).detach())  # takes the same delta buffer and overwrites it
        with pytest.raises(RuntimeError, match="reused the delta buffer"):
            first.backward()
        engine.masked_logits(keep).sum().backward()  # a run whose backward comes first is fine
    assert keep.grad is not None and torch.isfinite(keep.grad).all()


@pytest.mark.parametrize(("n", "parts"), [(5, 1), (3, 1), (5, 2)])
def test_the_differentiable_weighted_sum_has_the_gradient_of_its_formula(n, parts):
    """The sum reads one buffer the run writes outside autograd; its gradient reaches each source's output
    through that source's token, and must equal the numerical gradient of ``w . (reference - current)`` over the
    first ``n`` sources, for the weights and every source group, whether the rows come as one group or as
    several (a layer's q/k/v ports, each read in its own layout)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 4, n, generator=g, dtype=torch.float64, requires_grad=True)
    reference = torch.randn(1, 5, 3, 2, 5, generator=g, dtype=torch.float64)
    currents = [torch.randn(2, k, 3, 2, 5, generator=g, dtype=torch.float64, requires_grad=True) for k in (2, 1, 2)]

    def summed(w: torch.Tensor, *currents: torch.Tensor) -> torch.Tensor:
        delta, start = Deltas(2, 5), 0
        for current in currents:
            sl = slice(start, start + current.shape[1])
            delta.record(sl, reference[:, sl], current)
            start = sl.stop
        return torch.cat(weighted(delta, w, None, parts), 1)

    with torch.enable_grad():
        assert torch.autograd.gradcheck(summed, (w, *currents))
        dense = torch.einsum("mrs,msbpd->mrbpd", w, (reference - torch.cat(currents, 1))[:, :n])
        assert torch.allclose(summed(w, *currents), dense)


class _Killed(Exception):
    pass


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(tiny, tmp_path):
    engine = PatchingEngine(tiny, encode(NUMERALS.examples(4, seed=0), tiny.tokenizer), Ablation.RESAMPLE)
    base = EdgeEvaluator(engine).baselines
    n = engine.layout.graph.n_edges
    config = PruningConfig(steps=40, checkpoint_every=10)
    init = torch.full((n,), 2.0)
    whole = train_gates(engine, config, init, base.full, base.empty)
    checkpoint = tmp_path / "run.pt"

    def kill(step, loss, sparsity):
        if step == 27:
            raise _Killed

    with pytest.raises(_Killed):
        train_gates(engine, config, init, base.full, base.empty, checkpoint, kill)
    resumed = train_gates(engine, config, init, base.full, base.empty, checkpoint)
    assert resumed.resumed_from == 20 and whole.resumed_from == 0
    assert np.array_equal(resumed.log_alpha, whole.log_alpha) and resumed.history == whole.history
    assert [h[0] for h in whole.history] == [10, 20, 30, 40]


def test_edge_pruning_runs_as_a_method_and_its_options_are_its_own():
    out = json.loads(run("discover", "--model", "toy", "--task", "months", "--method", "edge-pruning", "--steps", "30",
                         "--threshold", "0.8", "--n", "8", "--json").stdout)
    (circuit,) = out["circuits"]
    assert circuit["edges"] > 0 and circuit["faithfulness"] >= 0.8
    assert out["spec"]["pruning"]["steps"] == 30 and out["spec"]["pruning"]["gate"] == "hard-concrete"
    refused = run("discover", "--model", "toy", "--task", "months", "--method", "eap", "--steps", "30", "--json",
                  ok=False)
    assert "--steps applies to edge-pruning" in refused.stdout
