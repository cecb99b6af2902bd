"""The engine against references: naive hook-per-edge patching, autograd first-order effects,
plain forward passes, and planted structure that each method must find."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circat.service.types import Ablation, IgPoints, Level, Method
from circat.workers.engine import corrections
from circat.workers.engine.attribution import edge_attribution, ig_alphas
from circat.workers.engine.evaluate import EdgeEvaluator, edge_baselines, faithfulness_curve, node_baselines
from circat.workers.engine.layout import layout_for
from circat.workers.engine.methods import RunSpec, discover
from circat.workers.engine.node_search import component_order, node_search
from circat.workers.engine.patching import PatchingEngine, source_hook_names
from circat.workers.engine.select import importance, prune, smallest_sizes, top_n
from circat.workers.metrics import final_logits, task_metric
from circat.workers.tasks import Metric, registered_tasks
from circat.workers.tasks.encode import encode
from tests.tiny_models import load, save_gpt2

NUMERALS = registered_tasks()[0]


@pytest.fixture(scope="module")
def batch(tiny):
    return encode(NUMERALS.examples(6, seed=0), tiny.tokenizer)


def naive_logits(engine: PatchingEngine, keep: np.ndarray) -> torch.Tensor:
    """Reference: one hook per ablated edge, adding (ablated - current) of its source."""
    graph = engine.layout.graph
    current: dict[int, torch.Tensor] = {}
    hooks = []
    for name, sl in source_hook_names(engine.layout):
        def record(x, hook, sl=sl):
            for j, s in enumerate(range(sl.start, sl.stop)):
                current[s] = x if x.dim() == 3 else x[:, :, j]
        hooks.append((name, record))
    for e in np.flatnonzero(~keep):
        edge, s = graph.edge(e), int(graph.edge_src[e])
        dst = edge.dst
        if dst.kind.value == "attention":
            name, head = f"blocks.{dst.layer}.hook_{edge.port.value}_input", dst.head
        else:
            name, head = ("ln_final.hook_in" if dst.kind.value == "logits" else f"blocks.{dst.layer}.hook_mlp_in"), None

        def add(x, hook, s=s, head=head):
            diff = engine.ablated[s] - current[s]
            if head is None:
                return x + diff
            x = x.clone()
            x[:, :, head] += diff
            return x
        hooks.append((name, add))
    with torch.no_grad():
        logits = engine.model.bridge.run_with_hooks(engine.batch.clean, fwd_hooks=hooks)
    return final_logits(logits, engine.batch.lengths)


@pytest.mark.parametrize("ablation", list(Ablation))
def test_fast_edge_patching_equals_naive_hooks(tiny, batch, ablation):
    engine = PatchingEngine(tiny, batch, ablation)
    rng = np.random.default_rng(0)
    n = engine.layout.graph.n_edges
    masks = np.stack([rng.random(n) > p for p in (0.1, 0.5, 0.9)] + [np.zeros(n, bool)])
    fast = engine.run_edges(torch.as_tensor(masks, dtype=torch.float32))
    for m, mask in enumerate(masks):
        torch.testing.assert_close(fast[m], naive_logits(engine, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("row_cost", [0.0, 1e9])
def test_every_form_of_the_weighted_sums_equals_naive_hooks(tiny, batch, row_cost, monkeypatch):
    monkeypatch.setattr(corrections, "DENSE_ROW_COST", row_cost)  # 0: dense for most multi-row groups, 1e9: row sums
    engine = PatchingEngine(tiny, batch, Ablation.MEAN)
    rng = np.random.default_rng(2)
    n = engine.layout.graph.n_edges
    masks = np.stack([rng.random(n) > p for p in (0.05, 0.5, 0.95)] + [np.zeros(n, bool), np.ones(n, bool)])
    fast = engine.run_edges(torch.as_tensor(masks, dtype=torch.float32))
    for m, mask in enumerate(masks):
        torch.testing.assert_close(fast[m], naive_logits(engine, mask), atol=1e-5, rtol=1e-5)


def test_a_masks_result_does_not_depend_on_the_masks_beside_it_that_start_where_it_does(tiny, batch):
    engine = PatchingEngine(tiny, batch, Ablation.RESAMPLE)
    layout, rng = engine.layout, np.random.default_rng(3)
    n, late = layout.graph.n_edges, layout.layers[2].attn_start

    def start_at(start: int, p: float) -> np.ndarray:
        mask = np.ones(n, bool)
        mask[start:] = rng.random(n - start) > p
        return mask

    for start in (0, late):  # every form in each batch: dense, dropped columns, complement
        masks = torch.as_tensor(np.stack([start_at(start, p) for p in (0.5, 0.05, 0.95, 0.9)]), dtype=torch.float32)
        together = engine.run_edges(masks)
        for m in range(len(masks)):
            assert torch.equal(engine.run_edges(masks[m:m + 1])[0], together[m])


@pytest.mark.parametrize("ablation", list(Ablation))
def test_runs_that_change_nothing_early_start_later_and_equal_naive_hooks(tiny, batch, ablation):
    engine = PatchingEngine(tiny, batch, ablation)
    layout, rng = engine.layout, np.random.default_rng(1)
    n = layout.graph.n_edges
    starts = [layout.layers[1].attn_start, layout.layers[2].attn_start, layout.layers[2].mlp_start,
              layout.logits_start]
    masks = np.ones((len(starts), n), bool)
    for row, start in zip(masks, starts, strict=True):
        row[start:] = rng.random(n - start) > 0.4
    with torch.no_grad():
        assert [engine.start_layer(torch.as_tensor(m[None], dtype=torch.float32)) for m in masks] == [1, 2, 2, 2]
    fast = engine.run_edges(torch.as_tensor(masks, dtype=torch.float32))
    for m, mask in enumerate(masks):
        torch.testing.assert_close(fast[m], naive_logits(engine, mask), atol=1e-5, rtol=1e-5)


def test_a_source_emitting_its_ablated_value_starts_the_run_at_its_layer(tiny, batch):
    engine = PatchingEngine(tiny, batch, Ablation.RESAMPLE)
    layout = engine.layout
    keep = torch.ones(1, layout.graph.n_edges)
    keep[0, layout.logits_start:] = 0
    first = torch.zeros(1, engine.n_sources)
    first[0, layout.layers[1].head_nodes[2]] = 1
    with torch.no_grad():
        assert engine.start_layer(keep, first) == 1
        whole = engine._final(engine.edge_hooks(keep, engine.clean_out, first), 1)
    torch.testing.assert_close(engine.run_edges(keep, engine.clean_out, first), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ablation", list(Ablation))
def test_eap_recording_the_clean_deltas_leaves_the_engine_as_a_fresh_one(tiny, batch, ablation):
    own, told = PatchingEngine(tiny, batch, ablation), PatchingEngine(tiny, batch, ablation)
    edge_attribution(told)  # its gradient pass records the deltas, in the ablated values' buffer under resample
    assert told.knows_clean_delta and (told._ablated is None) == (ablation is Ablation.RESAMPLE)
    torch.testing.assert_close(told.clean_delta, own.ablated - own.clean_out, atol=0, rtol=0)
    keep = torch.ones(2, own.layout.graph.n_edges)
    keep[0, own.layout.layers[2].attn_start::3] = 0
    keep[1, ::5] = 0
    with torch.no_grad():
        assert told.start_layer(keep[:1]) == 2
    torch.testing.assert_close(told.ablated, own.ablated, atol=0, rtol=0)
    torch.testing.assert_close(told.clean_resid, own.clean_resid, atol=0, rtol=0)
    torch.testing.assert_close(told.run_edges(keep), own.run_edges(keep), atol=0, rtol=0)


def test_node_masks_equal_their_edge_masks(tiny, batch):
    engine = PatchingEngine(tiny, batch, Ablation.MEAN, per_position=True)
    graph = engine.layout.graph
    keep = torch.rand(4, graph.n_nodes, generator=torch.Generator().manual_seed(1)) > 0.4
    keep[:, -1] = True
    as_edges = keep[:, torch.as_tensor(graph.edge_src, dtype=torch.long)]
    torch.testing.assert_close(engine.run_nodes(keep.float()), engine.run_edges(as_edges.float()), atol=1e-5, rtol=1e-5)


def test_full_and_empty_circuits_are_the_clean_and_corrupted_models(tiny, batch):
    engine = PatchingEngine(tiny, batch, Ablation.RESAMPLE)
    n = engine.layout.graph.n_edges
    out = engine.run_edges(torch.stack([torch.ones(n), torch.zeros(n)]))
    with torch.no_grad():
        clean = final_logits(tiny.bridge(batch.clean), batch.lengths)
        corrupted = final_logits(tiny.bridge(batch.corrupted), batch.corrupted_lengths)
    torch.testing.assert_close(out[0], clean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], corrupted, atol=1e-5, rtol=1e-5)
    base = edge_baselines(engine)
    assert base.faithfulness(base.full) == 1.0 and base.faithfulness(base.empty) == 0.0
    assert base.full == pytest.approx(task_metric(Metric.LOGIT_DIFF, clean, batch).item(), abs=1e-5)


def first_order_effect(engine: PatchingEngine, e: int) -> float:
    """d metric / d t when edge e carries t * (ablated - clean) extra, by autograd on its own hook."""
    graph = engine.layout.graph
    edge, s = graph.edge(e), int(graph.edge_src[e])
    t = torch.zeros((), requires_grad=True)
    clean = engine.sources(engine.batch.clean, engine.batch.lengths)[0]  # from its own plain run
    delta = (engine.ablated - clean)[s]
    dst = edge.dst
    if dst.kind.value == "attention":
        name = f"blocks.{dst.layer}.hook_{edge.port.value}_input"

        def hook(x, hook):
            bump = torch.zeros_like(x)
            bump[:, :, dst.head] = delta
            return x + t * bump
    else:
        name = "ln_final.hook_in" if dst.kind.value == "logits" else f"blocks.{dst.layer}.hook_mlp_in"

        def hook(x, hook):
            return x + t * delta
    with torch.enable_grad():
        logits = engine.model.bridge.run_with_hooks(engine.batch.clean, fwd_hooks=[(name, hook)])
        value = task_metric(engine.metric, final_logits(logits, engine.batch.lengths), engine.batch)
        (grad,) = torch.autograd.grad(value, t)
    return grad.item()


@pytest.mark.parametrize("ablation", [Ablation.RESAMPLE, Ablation.ZERO])
def test_eap_equals_first_order_effects_by_autograd(tiny, batch, ablation):
    engine = PatchingEngine(tiny, batch, ablation)
    scores = edge_attribution(engine)
    n = engine.layout.graph.n_edges
    for e in [*np.random.default_rng(2).choice(n, 25, replace=False), 0, n - 1]:
        assert scores[e].item() == pytest.approx(first_order_effect(engine, int(e)), rel=1e-4, abs=1e-6)


def test_eap_ig_with_one_step_is_eap_and_more_steps_differ(tiny, batch):
    engine = PatchingEngine(tiny, batch, Ablation.RESAMPLE)
    eap = edge_attribution(engine, steps=1)
    torch.testing.assert_close(edge_attribution(engine, steps=1), eap)
    assert not torch.allclose(edge_attribution(engine, steps=4), eap)


def _bumped_gradients(engine: PatchingEngine, e: int, runs: list[list[tuple]]) -> float:
    """The mean over ``runs`` (each a list of plain forward hooks on the clean prompts) of the autograd derivative
    of the metric when edge e carries ``t * (ablated - clean)`` extra, written without the engine's gradient code."""
    graph = engine.layout.graph
    edge, s = graph.edge(e), int(graph.edge_src[e])
    delta = (engine.ablated - engine.sources(engine.batch.clean, engine.batch.lengths)[0])[s]
    dst = edge.dst
    if dst.kind.value == "attention":
        name = f"blocks.{dst.layer}.hook_{edge.port.value}_input"
    else:
        name = "ln_final.hook_in" if dst.kind.value == "logits" else f"blocks.{dst.layer}.hook_mlp_in"
    total = 0.0
    for hooks in runs:
        t = torch.zeros((), requires_grad=True)

        def bump(x, hook, t=t):
            extra = torch.zeros_like(x)
            if dst.kind.value == "attention":
                extra[:, :, dst.head] = delta
            else:
                extra = delta.expand_as(x)
            return x + t * extra
        with torch.enable_grad():
            logits = engine.model.bridge.run_with_hooks(engine.batch.clean, fwd_hooks=[*hooks, (name, bump)])
            value = task_metric(engine.metric, final_logits(logits, engine.batch.lengths), engine.batch)
            # a replaced output downstream of the edge can cut it off the metric: then its derivative is 0
            (grad,) = torch.autograd.grad(value, t, allow_unused=True) if value.requires_grad else (None,)
        total += 0.0 if grad is None else grad.item()
    return total / len(runs)


def _plain_output(engine: PatchingEngine, tokens: torch.Tensor, name: str) -> torch.Tensor:
    captured = {}
    with torch.no_grad():
        engine.model.bridge.run_with_hooks(tokens, fwd_hooks=[(name, lambda x, hook: captured.setdefault(name, x))])
    return captured[name].clone()


def _replace(value: torch.Tensor):
    return lambda x, hook: value


def ig_reference(engine: PatchingEngine, e: int, alphas: list[float]) -> float:
    """EAP-IG (inputs): per alpha, a plain run whose input embedding is moved ``alpha`` of the way to the corrupted
    run's (recorded from its own plain run)."""
    clean, corrupted = (_plain_output(engine, t, "blocks.0.hook_resid_pre")
                        for t in (engine.batch.clean, engine.batch.corrupted))
    return _bumped_gradients(engine, e, [[("blocks.0.hook_resid_pre", _replace(clean + a * (corrupted - clean)))]
                                         for a in alphas])


def ig_activations_reference(engine: PatchingEngine, e: int, steps: int) -> float:
    """EAP-IG-activations as MIB's reference: per source (input, each attention, each MLP) and k = 1 .. steps, a
    plain clean run with that source's output at corrupted + k/steps (clean - corrupted), both recorded from plain
    runs."""
    runs = []
    for name, _ in source_hook_names(engine.layout):
        clean, corrupted = (_plain_output(engine, t, name) for t in (engine.batch.clean, engine.batch.corrupted))
        runs += [[(name, _replace(corrupted + k / steps * (clean - corrupted)))] for k in range(1, steps + 1)]
    return _bumped_gradients(engine, e, runs)


def test_eap_ig_at_mibs_points_equals_an_independent_integrated_gradient(tiny, batch):
    """MIB's EAP-IG-inputs takes its gradients at corrupted + k/steps (clean - corrupted), k = 0 .. steps - 1."""
    assert ig_alphas(4, IgPoints.MIB) == [1.0, 0.75, 0.5, 0.25] and ig_alphas(4, IgPoints.CLEAN) == [0, 0.25, 0.5, 0.75]
    engine = PatchingEngine(tiny, batch, Ablation.RESAMPLE)
    scores = edge_attribution(engine, steps=3, points=IgPoints.MIB)
    n = engine.layout.graph.n_edges
    for e in [*np.random.default_rng(5).choice(n, 12, replace=False), 0, n - 1]:
        assert scores[e].item() == pytest.approx(ig_reference(engine, int(e), [1.0, 2 / 3, 1 / 3]), rel=1e-4, abs=1e-6)
    clean = edge_attribution(engine, steps=3, points=IgPoints.CLEAN)
    assert clean[7].item() == pytest.approx(ig_reference(engine, 7, [0.0, 1 / 3, 2 / 3]), rel=1e-4, abs=1e-6)
    assert not torch.allclose(scores, clean)


def test_eap_ig_activations_equals_an_independent_computation_of_mibs_variant(tiny, batch):
    assert ig_alphas(4, IgPoints.ACTIVATIONS) == [0.75, 0.5, 0.25, 0.0]
    engine = PatchingEngine(tiny, batch, Ablation.RESAMPLE)
    scores = edge_attribution(engine, steps=2, points=IgPoints.ACTIVATIONS)
    n = engine.layout.graph.n_edges
    for e in [*np.random.default_rng(6).choice(n, 8, replace=False), 0, n - 1]:
        assert scores[e].item() == pytest.approx(ig_activations_reference(engine, int(e), 2), rel=1e-4, abs=1e-6)
    assert not torch.allclose(scores, edge_attribution(engine, steps=2, points=IgPoints.MIB))


def test_gpt2_small_shaped_model_has_the_mib_graph(tmp_path):
    loaded = load(save_gpt2(tmp_path, n_layer=12, n_head=12, n_embd=48))
    graph = layout_for(loaded.shape).graph
    assert (graph.n_nodes, graph.n_edges) == (158, 32491)
    engine = PatchingEngine(loaded, encode(NUMERALS.examples(2, seed=0), loaded.tokenizer), Ablation.ZERO)
    assert engine.clean_out.shape[0] == 157
    assert edge_attribution(engine).shape == (32491,)


def test_prune_keeps_only_edges_on_input_to_logits_paths(tiny):
    graph = layout_for(tiny.shape).graph
    mask = np.zeros(graph.n_edges, bool)
    for name in ("a0.h0->a1.h0<q>", "input->a0.h1<v>", "a0.h1->logits", "a0.h1->m2"):
        mask[graph.edge_id(name)] = True
    kept = set(graph.names(Level.EDGE, np.flatnonzero(prune(graph, mask))))
    assert kept == {"input->a0.h1<v>", "a0.h1->logits"}


def test_selection_by_signed_and_absolute_score():
    scores = np.array([0.5, -2.0, 1.0, -0.1])
    assert top_n(importance(scores, Metric.LOGIT_DIFF, absolute=True), 2).tolist() == [False, True, True, False]
    assert top_n(importance(scores, Metric.LOGIT_DIFF, absolute=False), 2).tolist() == [False, True, False, True]
    assert top_n(importance(scores, Metric.KL, absolute=False), 1).tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="top-n must be between 0 and 4"):
        top_n(scores, 5)


LIVE_EDGES = {"input->a1.h0<q>", "input->a1.h0<k>", "input->a1.h0<v>", "a1.h0->logits", "input->logits"}


def test_planted_eap_scores_only_live_paths(planted):
    engine = PatchingEngine(planted, encode(NUMERALS.examples(8, seed=1), planted.tokenizer), Ablation.RESAMPLE)
    scores = edge_attribution(engine, steps=3).numpy()
    graph = engine.layout.graph
    nonzero = set(graph.names(Level.EDGE, np.flatnonzero(np.abs(scores) > 1e-7)))
    assert nonzero <= LIVE_EDGES and "a1.h0->logits" in nonzero


@pytest.mark.parametrize("method", list(Method))
def test_planted_methods_exclude_silent_components_and_keep_the_carrier(planted, method):
    batch = encode(NUMERALS.examples(8, seed=1), planted.tokenizer)
    # ACDC's threshold is absolute: this random model's KL between clean and corrupted runs is about 1e-6
    run = discover(planted, batch, RunSpec("planted", "numerals", method, levels=(0.9,), taus=(1e-8,)))
    graph = layout_for(planted.shape).graph
    (circuit,) = run.circuits
    assert {graph.node_names[i] for i in np.flatnonzero(circuit.node_mask & graph.component_mask)} == {"a1.h0"}
    assert circuit.provenance.faithfulness >= 0.9
    if circuit.edge_mask is not None:
        assert set(graph.names(Level.EDGE, np.flatnonzero(circuit.edge_mask))) <= LIVE_EDGES


def test_node_search_orders_and_survival(planted):
    engine = PatchingEngine(planted, encode(NUMERALS.examples(8, seed=1), planted.tokenizer), Ablation.MEAN)
    result = node_search(engine, levels=(0.5, 0.97), orders=("backward", "forward", "random:1"))
    a10 = engine.layout.graph.node_id("a1.h0")
    assert result.keep.shape == (3, 2, engine.layout.graph.n_nodes)
    assert (result.survival[:, a10] == 1).all()
    assert result.survival[:, engine.layout.graph.component_mask].sum(1).tolist() == [1, 1]
    assert (result.faithfulness >= np.array([0.5, 0.97])).all()
    assert node_baselines(engine).faithfulness(node_baselines(engine).empty) == 0
    order = component_order(engine.layout, "backward")
    assert [engine.layout.graph.node_names[i] for i in order[:3]] == ["m2", "a2.h3", "a2.h2"]
    with pytest.raises(ValueError, match="unknown sweep order 'sideways'"):
        component_order(engine.layout, "sideways")


def test_faithfulness_curve_ends_at_one(tiny, batch):
    engine = PatchingEngine(tiny, batch, Ablation.RESAMPLE)
    scores = edge_attribution(engine).numpy()
    evaluator = EdgeEvaluator(engine)
    curve = faithfulness_curve(evaluator, importance(scores, Metric.LOGIT_DIFF))
    assert curve.percents[-1] == 100 and curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-5)
    assert list(curve.edges) == sorted(curve.edges)
    assert curve.cmd >= 0


def test_an_evaluator_runs_each_distinct_mask_once(tiny, batch):
    evaluator = EdgeEvaluator(PatchingEngine(tiny, batch, Ablation.RESAMPLE))
    n = evaluator.engine.layout.graph.n_edges
    masks = np.random.default_rng(0).random((3, n)) > 0.5
    first = evaluator.metrics(np.concatenate([masks, masks[:1]]))
    assert evaluator.evaluations == 3 and first[0] == first[3]
    np.testing.assert_array_equal(evaluator.metrics(masks[::-1]), first[:3][::-1])
    assert evaluator.evaluations == 3
    _ = evaluator.baselines
    assert evaluator.evaluations == 5


def test_size_bisection_finds_the_smallest_size_of_every_level():
    n = 100_000
    calls = []

    def faith_at(sizes):
        calls.append(len(sizes))
        return np.log1p(np.asarray(sizes)) / np.log1p(n)  # increasing, 0 at 0 and 1 at n

    levels = (0.5, 0.7, 0.8, 0.9)
    found = smallest_sizes(faith_at, n, levels, known={100: faith_at([100])[0], 10_000: faith_at([10_000])[0]})
    for level, (k, f) in zip(levels, found, strict=True):
        exact = int(np.ceil(np.expm1(level * np.log1p(n))))
        assert f >= level and exact <= k <= 1.25 * exact + 1
    assert sum(calls[2:]) < 48  # fewer evaluations than the fixed grid of sizes it replaced
