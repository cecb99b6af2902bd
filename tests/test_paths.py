"""Path patching and IPE against references: Wang et al.'s three plain-hook runs, IPE's message
propagation node by node with plain hooks, exact derivatives where a path is linear, and planted
structure that each must find; on GPT-2 and on grouped-query Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circat.service.jobs.spec import PathSearch
from circat.service.types import Ablation, Level, Method, NodeKind, Search
from circat.workers.engine.evaluate import EdgeEvaluator
from circat.workers.engine.ipe import PathScorer, search_paths
from circat.workers.engine.methods import RunSpec, discover
from circat.workers.engine.patching import PatchingEngine
from circat.workers.engine.path_patching import effects, sender_masks
from circat.workers.metrics import final_logits, task_metric
from circat.workers.tasks import get_task, registered_tasks
from circat.workers.tasks.encode import encode
from tests.tiny_models import load, save_gpt2

NUMERALS = registered_tasks()[0]


@pytest.fixture(scope="module")
def engine(tiny):
    return PatchingEngine(tiny, encode(NUMERALS.examples(6, seed=0), tiny.tokenizer), Ablation.RESAMPLE)


def output_hook(node) -> tuple[str, int | None]:
    """The plain hook holding a node's output, and its head index."""
    if node.kind is NodeKind.INPUT:
        return "blocks.0.hook_resid_pre", None
    if node.kind is NodeKind.ATTENTION:
        return f"blocks.{node.layer}.attn.hook_result", node.head
    return f"blocks.{node.layer}.hook_mlp_out", None


def input_hook_of(node, port: str) -> tuple[str, int | None]:
    """The plain hook holding a node's input on ``port``, and its head index."""
    if node.kind is NodeKind.LOGITS:
        return "ln_final.hook_in", None
    if node.kind is NodeKind.ATTENTION:
        return f"blocks.{node.layer}.hook_{port}_input", node.head
    return f"blocks.{node.layer}.hook_mlp_in", None


def run(engine: PatchingEngine, tokens, hooks=(), read=()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A plain hooked run: the metric, and the values at the hooks named in ``read``."""
    seen: dict[str, torch.Tensor] = {}

    def keeper(name: str):
        def keep(x, hook):
            seen[name] = x.detach().clone()
        return keep

    with torch.no_grad():
        logits = engine.model.bridge.run_with_hooks(tokens, fwd_hooks=[*hooks, *((n, keeper(n)) for n in read)])
    final = final_logits(logits, engine.batch.lengths)
    return task_metric(engine.metric, final, engine.batch).double(), seen


def setter(value: torch.Tensor, head: int | None):
    def hook(x, hook):
        x = x.clone()
        if head is None:
            x[:] = value
        else:
            x[:, :, head] = value
        return x
    return hook


def naive_path_patching(engine: PatchingEngine, sender: int, receivers: list[tuple[int, str]]) -> float:
    """Wang et al.: sender corrupted and every other source frozen clean, receiver inputs recorded;
    then a clean run with those receiver inputs patched in. The metric of that run."""
    graph = engine.layout.graph
    clean_tokens, corrupted_tokens = engine.batch.clean, engine.batch.corrupted
    sources = [graph.nodes[s] for s in range(engine.n_sources)]
    out_hooks = sorted({output_hook(n)[0] for n in sources})
    _, clean = run(engine, clean_tokens, read=out_hooks)
    _, corrupted = run(engine, corrupted_tokens, read=out_hooks)
    frozen = []
    for s, node in enumerate(sources):
        name, head = output_hook(node)
        cache = corrupted if s == sender else clean
        frozen.append((name, setter(cache[name] if head is None else cache[name][:, :, head], head)))
    targets = [input_hook_of(graph.nodes[r], port) for r, port in receivers]
    _, seen = run(engine, clean_tokens, frozen, read=sorted({n for n, _ in targets}))
    patch = [(n, setter(seen[n] if h is None else seen[n][:, :, h], h)) for n, h in targets]
    return run(engine, clean_tokens, patch)[0].item()


def naive_path_metric(engine: PatchingEngine, edges: list[int]) -> float:
    """IPE by hand: the first node's message clean - corrupted; each next node reruns with its path
    input minus the message (a plain run patching that one input), the difference of its output is
    the next message; the metric with the last message removed from the final residual."""
    graph = engine.layout.graph
    tokens = engine.batch.clean
    first = graph.nodes[int(graph.edge_src[edges[0]])]
    name, head = output_hook(first)
    _, clean = run(engine, tokens, read=[name])
    _, corrupted = run(engine, engine.batch.corrupted, read=[name])
    pick = (lambda t: t) if head is None else (lambda t: t[:, :, head])
    message = pick(clean[name]) - pick(corrupted[name])
    for e in edges:
        edge = graph.edge(e)
        in_name, in_head = input_hook_of(edge.dst, edge.port.value)
        if edge.dst.kind is NodeKind.LOGITS:
            _, seen = run(engine, tokens, read=[in_name])
            return run(engine, tokens, [(in_name, setter(seen[in_name] - message, None))])[0].item()
        out_name, out_head = output_hook(edge.dst)
        _, base = run(engine, tokens, read=[in_name, out_name])
        x = base[in_name] if in_head is None else base[in_name][:, :, in_head]
        _, changed = run(engine, tokens, [(in_name, setter(x - message, in_head))], read=[out_name])
        take = (lambda t: t) if out_head is None else (lambda t, h=out_head: t[:, :, h])
        message = take(base[out_name]) - take(changed[out_name])
    raise AssertionError("a path ends at the logits")


def test_path_patching_effects_equal_wang_et_al_with_plain_hooks(engine):
    graph = engine.layout.graph
    evaluator = EdgeEvaluator(engine)
    cases = [(0, [("logits", "logits")]), (graph.node_id("a1.h2"), [("logits", "logits")]),
             (graph.node_id("a0.h1"), [("a2.h3", "q"), ("a2.h3", "v")]),
             (graph.node_id("m0"), [("a1.h0", "k"), ("m2", "mlp"), ("logits", "logits")])]
    for sender, receivers in cases:
        slots = [graph.slot_of[(name, port)] for name, port in receivers]
        ours = evaluator.metrics(sender_masks(graph, np.array([sender]), slots))[0]
        theirs = naive_path_patching(engine, sender, [(graph.node_id(n), p) for n, p in receivers])
        assert ours == pytest.approx(theirs, rel=1e-3, abs=1e-4), (graph.node_names[sender], receivers)


def random_paths(graph, rng: np.random.Generator, count: int) -> list[list[int]]:
    """Random complete or partial paths ending at the logits, through q, k, v and MLP inputs."""
    paths = []
    while len(paths) < count:
        edges: list[int] = []
        slot = graph.slot_of[("logits", "logits")]
        for _ in range(int(rng.integers(1, 4))):
            src = int(rng.integers(0, graph.dests[slot].n_sources))
            edges.insert(0, int(graph.slot_start[slot]) + src)
            node = graph.nodes[src]
            if node.kind is NodeKind.INPUT:
                break
            port = str(rng.choice(["q", "k", "v"])) if node.kind is NodeKind.ATTENTION else "mlp"
            slot = graph.slot_of[(node.name, port)]
        paths.append(edges)
    return paths


def test_ipe_contributions_equal_message_propagation_by_plain_hooks(engine):
    graph = engine.layout.graph
    scorer = PathScorer(engine, EdgeEvaluator(engine).baselines)
    paths = random_paths(graph, np.random.default_rng(0), 8)
    ours = scorer.exact([tuple(p) for p in paths])
    base = scorer.baselines
    theirs = [(base.full - naive_path_metric(engine, p)) / (base.full - base.empty) for p in paths]
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)
    assert scorer.counts.forward == len(paths)


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """A GPT-2 whose norms are linear (an epsilon far above the residual's variance)."""
    return load(save_gpt2(tmp_path_factory.mktemp("linear"), n_layer=3, n_head=4, n_embd=32, seed=5,
                          linear_norms=True))


def test_derivative_scores_are_exact_where_the_path_is_linear(linear):
    """Value messages through heads with frozen patterns and linear norms: first order is exact."""
    engine = PatchingEngine(linear, encode(NUMERALS.examples(6, seed=2), linear.tokenizer), Ablation.RESAMPLE)
    graph = engine.layout.graph
    scorer = PathScorer(engine, EdgeEvaluator(engine).baselines)
    head_to_logits = (graph.edge_id("a2.h1->logits"),)
    two_heads = (graph.edge_id("a1.h3->a2.h1<v>"), graph.edge_id("a2.h1->logits"))
    for partial in [(), head_to_logits, two_heads]:
        ((conts, estimate),) = scorer.approx([partial])
        linear_ones = [i for i, c in enumerate(conts) if not partial or graph.edge(c[0]).port.value == "v"]
        exact = scorer.exact([conts[i] for i in linear_ones])
        scale = np.abs(exact).max()
        assert scale > 0
        np.testing.assert_allclose(estimate[linear_ones], exact, rtol=1e-2, atol=3e-4)  # float32 noise
    assert scorer.counts.backward == 3


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_derivative_scores_rank_continuations_like_the_exact_ones_on_the_toy_model():
    toy = load_toy()
    batch = encode(get_task("ioi").examples(16, seed=0), toy.tokenizer)
    engine = PatchingEngine(toy, batch, Ablation.RESAMPLE)
    scorer = PathScorer(engine, EdgeEvaluator(engine).baselines)
    graph = engine.layout.graph
    partials = [(), (graph.edge_id("a3.h0->logits"),), (graph.edge_id("a2.h2->logits"),)]
    rhos = []
    for conts, estimate in scorer.approx(partials):
        rhos.append(spearman(estimate, scorer.exact(conts)))
    assert min(rhos) > 0.6, rhos


def whole_input_ablated(scorer: PathScorer, partial: tuple[int, ...]) -> float:
    """A partial path's contribution with its first node's every input edge ablated at once: those
    edges and the path kept, their sources emitting their ablated outputs, every other edge clean."""
    engine, graph = scorer.engine, scorer.graph
    keep = torch.zeros((1, graph.n_edges))
    keep[0, list(partial)] = 1
    for slot in scorer.slots(partial):
        keep[0, int(graph.slot_start[slot]):int(graph.slot_start[slot]) + graph.dests[slot].n_sources] = 1
    first = torch.zeros((1, engine.n_sources))
    first[0, :max(graph.dests[slot].n_sources for slot in scorer.slots(partial))] = 1
    metric = engine.metric_of(engine.run_edges(keep, engine.clean_out, first))[0].item()
    return (scorer.baselines.full - metric) / scorer.span


def test_integrated_estimates_add_up_to_ablating_the_first_nodes_whole_input():
    """Completeness: gradients averaged from the clean input to the fully ablated one, dotted with
    each continuation's message, sum to the whole input's effect (the plain gradient need not)."""
    toy = load_toy()
    engine = PatchingEngine(toy, encode(get_task("ioi").examples(8, seed=0), toy.tokenizer), Ablation.RESAMPLE)
    baselines = EdgeEvaluator(engine).baselines
    graph = engine.layout.graph
    partials = [(), (graph.edge_id("a2.h2->logits"),), (graph.edge_id("m1->logits"),),
                (graph.edge_id("a1.h1->a2.h3<k>"), graph.edge_id("a2.h3->logits"))]
    integrated, plain = PathScorer(engine, baselines, steps=64), PathScorer(engine, baselines)
    for partial, (_, estimates) in zip(partials, integrated.approx(partials), strict=True):
        whole = whole_input_ablated(integrated, partial)
        assert estimates.sum() == pytest.approx(whole, rel=0.02, abs=1e-3), partial
    assert integrated.counts.backward == 64 * len(partials)
    ((_, at_clean),) = plain.approx([()])
    assert abs(at_clean.sum() - whole_input_ablated(plain, ())) > 0.5  # the final norm is far from linear here


def test_optimism_scales_estimates_by_the_quantile_of_exact_over_estimate():
    from circat.workers.engine.ipe import _Calibration

    calibration = _Calibration(0.5)
    calibration.observe(np.array([1.0, -2.0, 0.0, 4.0]), np.array([2.0, -2.0, 5.0, 2.0]))
    assert calibration.factor == 1.0  # too few re-checks yet: estimates as they are
    calibration.observe(np.full(6, 0.5), np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0]))
    assert calibration.factor == pytest.approx(np.quantile([2, 1, 0.5, 1, 2, 3, 4, 5, 6], 0.5))
    assert _Calibration(0.0).factor == 1.0


def load_toy():
    from circat.workers.models import load_model

    return load_model("toy", device="cpu")


# In the planted model only a1.h0 writes; IOI's last token is the same in clean and corrupted prompts,
# so the direct path and a1.h0's query carry nothing: the signal runs through its keys and values.
CARRIERS = {("input->a1.h0<v>", "a1.h0->logits"), ("input->a1.h0<k>", "a1.h0->logits")}


@pytest.mark.parametrize(("approximate", "optimism", "steps"),
                         [(False, 0.0, 1), (True, 0.0, 1), (True, 0.9, 1), (True, 0.0, 5)])
def test_ipe_finds_the_planted_paths_first(planted, approximate, optimism, steps):
    engine = PatchingEngine(planted, encode(get_task("ioi").examples(8, seed=1), planted.tokenizer))
    scorer = PathScorer(engine, EdgeEvaluator(engine).baselines, steps)
    for strategy in Search:
        search = PathSearch(min_effect=1e-4, search=strategy, optimism=optimism)
        result = search_paths(scorer, search, approximate)
        names = [tuple(p.names(engine.layout.graph)) for p in result.paths]
        assert names[0] in CARRIERS and set(names) <= CARRIERS, (strategy, names)
        assert result.stopped == "exhausted"
        spent = [p.evaluations for p in result.paths]
        assert 0 < result.evaluations_for(1) == min(spent) <= max(spent) == result.evaluations_for(len(spent))
        assert max(spent) <= result.counts.total == result.evaluations_for(len(spent) + 1)


def test_path_patching_finds_the_planted_head_round_by_round(planted):
    engine = PatchingEngine(planted, encode(get_task("ioi").examples(8, seed=1), planted.tokenizer))
    run = discover(planted, engine.batch, RunSpec("planted", "ioi", Method.PATH_PATCHING))
    (circuit,) = run.circuits
    graph = engine.layout.graph
    assert [graph.node_names[i] for i in np.flatnonzero(circuit.component_mask)] == ["a1.h0"]
    rounds = circuit.annotations["rounds"]
    assert rounds[0]["receivers"] == ["logits"] and "a1.h0" in rounds[0]["senders"]
    assert set(graph.names(Level.EDGE, np.flatnonzero(circuit.edge_mask))) <= {e for p in CARRIERS for e in p}
    assert rounds[-1]["faithfulness"] == pytest.approx(circuit.provenance.faithfulness)


def test_effects_are_shares_of_the_behaviour(engine):
    graph = engine.layout.graph
    evaluator = EdgeEvaluator(engine)
    every = np.arange(engine.n_sources)
    all_into_logits = np.ones((1, graph.n_edges), dtype=bool)
    all_into_logits[0, graph.slot_start[-2]:] = False
    # float32: the masked run and the empty baseline sum in different orders (1.2e-5 apart on some CPUs)
    assert effects(evaluator, all_into_logits)[0] == pytest.approx(1.0, abs=1e-4)
    assert effects(evaluator, sender_masks(graph, every, [])).tolist() == pytest.approx([0.0] * len(every), abs=1e-6)


def test_gradient_points_are_the_methods_default_unless_given():
    spec = RunSpec("toy", "ioi", Method.IPE_APPROX)
    assert spec.gradient_points == 2 and spec.params()["ig_steps"] == 2
    assert RunSpec("toy", "ioi", Method.EAP_IG).gradient_points == 5
    assert RunSpec("toy", "ioi", Method.IPE_APPROX, ig_steps=7).gradient_points == 7
    assert RunSpec("toy", "ioi", Method.EAP, ig_steps=7).gradient_points == 1  # plain EAP: one gradient
