"""Functional evaluation with known answers: the full and empty circuits, a discovery circuit on its own task,
and an independent reference (plain forward hooks on the Hugging Face model, no patching engine) for keep and
knockout at node level, on several circuits and tasks, with every ablation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from circat.service.catalogue import Catalogue
from circat.service.circuit import Circuit, Provenance
from circat.service.graph import graph_for
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.jobs.spec import DiscoverySpec
from circat.service.types import Ablation, Level, Method, Mode, NodeKind
from circat.workers.discover import metric_for, prompts_for, run_discovery
from circat.workers.evaluation import expression_circuit, run_components, run_evaluation, run_extension
from circat.workers.metrics import task_metric
from circat.workers.models import TOY_DIR
from circat.workers.tasks.encode import TaskBatch

N = 16
CIRCUITS = ["a1.h0, a2.h1, a3.h2, m1, m3", "heads(L2-L3) | mlps(L0-L1)", "layer(1), a3.h3, m2"]


def _hf_model() -> GPT2LMHeadModel:
    model = GPT2LMHeadModel.from_pretrained(TOY_DIR)
    model.eval()
    return model


class Recorder:
    """Each head's input to the output projection ``[b, p, heads * d_head]`` and each MLP's output, per layer."""

    def __init__(self, model: GPT2LMHeadModel, tokens: torch.Tensor):
        self.z: list[torch.Tensor] = []
        self.mlp: list[torch.Tensor] = []
        handles = []
        for block in model.transformer.h:
            handles.append(block.attn.c_proj.register_forward_pre_hook(lambda _, a: self.z.append(a[0].detach())))
            handles.append(block.mlp.register_forward_hook(lambda _, __, out: self.mlp.append(out.detach())))
        with torch.no_grad():
            self.logits = model(tokens).logits
        for h in handles:
            h.remove()


def _ablated(values: torch.Tensor, ablation: Ablation, lengths: torch.Tensor, per_position: bool) -> torch.Tensor:
    """What an ablated source carries: zeros, the corrupted run's value, or its mean over valid positions."""
    if ablation is Ablation.ZERO:
        return torch.zeros_like(values)
    if ablation is Ablation.RESAMPLE:
        return values
    valid = (torch.arange(values.shape[1])[None] < lengths[:, None]).to(values.dtype)[..., None]
    if per_position:
        return ((values * valid).sum(0, keepdim=True) / valid.sum(0, keepdim=True).clamp(min=1)).expand_as(values)
    return ((values * valid).sum((0, 1), keepdim=True) / valid.sum()).expand_as(values)


def reference_metric(model: GPT2LMHeadModel, batch: TaskBatch, dropped: set[str], ablation: Ablation,
                     metric: str, per_position: bool = False) -> float:
    """The task metric with the components ``dropped`` ablated, by forward hooks on the Hugging Face model."""
    corrupted = Recorder(model, batch.corrupted)
    clean = Recorder(model, batch.clean)
    d_head = model.config.n_embd // model.config.n_head
    handles = []
    for layer, block in enumerate(model.transformer.h):
        heads = [h for h in range(model.config.n_head) if f"a{layer}.h{h}" in dropped]
        if heads:
            z_ablated = _ablated(corrupted.z[layer], ablation, batch.corrupted_lengths, per_position)

            def patch_heads(_, args, heads=heads, z_ablated=z_ablated):
                z = args[0].clone()
                for h in heads:
                    z[..., h * d_head:(h + 1) * d_head] = z_ablated[..., h * d_head:(h + 1) * d_head]
                return (z,)

            handles.append(block.attn.c_proj.register_forward_pre_hook(patch_heads))
        if f"m{layer}" in dropped:
            out_ablated = _ablated(corrupted.mlp[layer], ablation, batch.corrupted_lengths, per_position)
            handles.append(block.mlp.register_forward_hook(lambda _, __, out, a=out_ablated: a))
    with torch.no_grad():
        logits = model(batch.clean).logits
    for h in handles:
        h.remove()
    last = torch.arange(len(batch))
    final, reference = logits[last, batch.lengths - 1], clean.logits[last, batch.lengths - 1]
    return float(task_metric(metric, final, batch, reference))


def _components(selection) -> set[str]:
    g = graph_for(selection.shape)
    return set(g.names(Level.NODE, np.flatnonzero(selection.node_mask & g.component_mask)))


@pytest.mark.parametrize("ablation", list(Ablation))
def test_keep_and_knockout_equal_plain_hooks_on_the_hugging_face_model(sqlite_store, ablation):
    cat, model = Catalogue(sqlite_store), _hf_model()
    every = {n.name for n in graph_for(model_shape()).nodes if n.kind in (NodeKind.ATTENTION, NodeKind.MLP)}
    for task in ("months", "greater-than", "ioi"):
        batch = prompts_for("toy", task, None, N, 0, "float32", "cpu").batch
        metric = metric_for(task, None).value
        full = reference_metric(model, batch, set(), ablation, metric)
        empty = reference_metric(model, batch, every, ablation, metric)
        for mode in Mode:
            spec = EvaluationSpec(expressions=tuple(CIRCUITS), model="toy", task=task, mode=mode, ablation=ablation,
                                  n=N)
            for result in run_evaluation(spec, cat).results:
                kept = _components(result.selection)
                dropped = every - kept if mode is Mode.KEEP else kept
                expected = (reference_metric(model, batch, dropped, ablation, metric) - empty) / (full - empty)
                assert result.value == pytest.approx(expected, abs=1e-4), (task, mode, result.selection.text)
                assert result.full == pytest.approx(full, abs=1e-4) and result.empty == pytest.approx(empty, abs=1e-4)


def model_shape():
    from circat.workers.models import load_model

    return load_model("toy").shape


def test_full_and_empty_circuits_have_known_values(sqlite_store):
    cat = Catalogue(sqlite_store)
    shape = model_shape()
    g = graph_for(shape)
    full = Circuit(Provenance(model="toy", task="months", method="all"), shape, node_mask=np.ones(g.n_nodes, bool),
                   node_scores=np.full(g.n_nodes, np.nan), edge_mask=np.ones(g.n_edges, bool),
                   edge_scores=np.ones(g.n_edges))
    cid = cat.add(full)
    texts = ("heads(all) | mlps(all)", "heads(all) - heads(all)", cid, f"{cid} - {cid}")
    expected = {Mode.KEEP: [1.0, 0.0, 1.0, 0.0], Mode.KNOCKOUT: [0.0, 1.0, 0.0, 1.0]}
    for mode, values in expected.items():
        run = run_evaluation(EvaluationSpec(expressions=texts, model="toy", task="months", mode=mode, n=8), cat)
        assert [r.selection.level for r in run.results] == [Level.NODE, Level.NODE, Level.EDGE, Level.EDGE]
        assert [r.value for r in run.results] == pytest.approx(values, abs=1e-6), mode


@pytest.mark.parametrize("method", [Method.EAP, Method.ABLATION])
def test_a_discovery_circuit_on_its_own_task_gives_back_its_faithfulness(sqlite_store, method):
    cat = Catalogue(sqlite_store)
    spec = DiscoverySpec(model="toy", task="numerals", method=method, n=N, levels=(0.8,), ablation=Ablation.MEAN)
    circuit = run_discovery(spec).circuits[0]
    cid = cat.add(circuit)
    run = run_evaluation(EvaluationSpec(expressions=(cid,), model="toy", task="numerals", ablation=Ablation.MEAN,
                                        n=N), cat)
    assert run.results[0].value == pytest.approx(circuit.provenance.faithfulness, abs=1e-6)
    assert run.results[0].selection.level is (Level.EDGE if method is Method.EAP else Level.NODE)


def test_an_expression_is_stored_as_a_circuit_that_names_what_it_came_from(sqlite_store):
    cat = Catalogue(sqlite_store)
    run = run_evaluation(EvaluationSpec(expressions=("heads(L2-L3) | m3",), model="toy", task="months", n=8), cat)
    stored = cat.get(cat.add(expression_circuit(run, run.results[0])))
    params = stored.provenance.params
    assert stored.provenance.method == "expression" and params["expression"] == "(heads(L2-L3) | m3)"
    assert params["derived_from"] == [] and stored.provenance.faithfulness == pytest.approx(run.results[0].value)
    assert stored.n_nodes == run.results[0].selection.n_components


def test_component_effects_equal_separate_evaluations_in_one_pass_per_group(sqlite_store):
    cat = Catalogue(sqlite_store)
    base = "a1.h0, a2.h1, m1, m3"
    spec = EvaluationSpec(expressions=(base,), model="toy", task="months", n=N)
    _, effects = run_components(spec, cat)
    assert set(effects.passes.values()) == {1}  # the toy's 20 components fit one batch per group
    removed = {c: f"({base}) - {c}" for c in ("a1.h0", "m3")}
    added = {c: f"{base}, {c}" for c in ("a0.h0", "m2")}
    sweeps = {"layer": f"{base}, heads(L0)", "upto": f"{base}, heads(L0-L2)"}
    texts = (base, *removed.values(), *added.values(), *sweeps.values())
    values = [r.value for r in run_evaluation(EvaluationSpec(expressions=texts, model="toy", task="months", n=N),
                                              cat).results]
    f = dict(zip(texts, values, strict=True))
    assert effects.base == pytest.approx(f[base], abs=1e-6)
    for c, text in removed.items():
        assert effects.removed[c] == pytest.approx(f[base] - f[text], abs=1e-6)
    for c, text in added.items():
        assert effects.added[c] == pytest.approx(f[text] - f[base], abs=1e-6)
    assert effects.layer_heads[0] == pytest.approx(f[sweeps["layer"]], abs=1e-6)
    assert effects.heads_upto[2] == pytest.approx(f[sweeps["upto"]], abs=1e-6)
    assert set(effects.removed) == {"a1.h0", "a2.h1", "m1", "m3"} and len(effects.added) == 16


def test_extend_adds_the_best_component_first_and_stores_what_it_reached(sqlite_store):
    cat = Catalogue(sqlite_store)
    spec = EvaluationSpec(expressions=("m3",), model="toy", task="numerals", level=Level.NODE, n=N)
    _, effects = run_components(spec, cat)
    _, grown, circuit = run_extension(EvaluationSpec(**spec.model_dump() | {"kind": "extend", "threshold": 0.8}), cat)
    assert grown.added[0] == max(effects.added, key=effects.added.get)
    assert grown.reached and grown.faithfulness[-1] >= 0.8 > grown.faithfulness[-2]
    cid = cat.add(circuit)
    stored = cat.get(cid)
    assert stored.provenance.method == "extend" and stored.provenance.params["added"] == grown.added
    again = run_evaluation(EvaluationSpec(expressions=(cid,), model="toy", task="numerals", n=N), cat).results[0]
    assert again.value == pytest.approx(stored.provenance.faithfulness, abs=1e-6)


def test_extend_at_edge_level_adds_the_best_edge_first_and_stores_an_edge_circuit(sqlite_store):
    cat = Catalogue(sqlite_store)
    graph = graph_for(_toy_shape())
    path = ["input->a3.h0<v>", "a3.h0->logits"]
    _, near, _ = run_extension(EvaluationSpec(kind="extend", expressions=(", ".join(path),), model="toy",
                                              task="months", level=Level.EDGE, threshold=0.3, candidates=8, n=8), cat)
    start = path + near.added[:-1]  # one edge short of 0.3
    spec = EvaluationSpec(kind="extend", expressions=(", ".join(start),), model="toy", task="months",
                          level=Level.EDGE, threshold=0.3, candidates=0, n=8)
    _, grown, circuit = run_extension(spec, cat)
    assert grown.level is Level.EDGE and grown.reached and grown.faithfulness[0] < 0.3 <= grown.faithfulness[-1]
    outside = [e for e in (graph.edge_name(i) for i in range(graph.n_edges)) if e not in start]
    texts = tuple(f"{', '.join(start)}, {e}" for e in outside)
    values = [r.value for k in range(0, len(texts), 100) for r in run_evaluation(EvaluationSpec(
        expressions=texts[k:k + 100], model="toy", task="months", level=Level.EDGE, n=8), cat).results]
    assert values[outside.index(grown.added[0])] == pytest.approx(max(values), abs=1e-6)
    assert grown.faithfulness[1] == pytest.approx(max(values), abs=1e-6)
    stored = cat.get(cat.add(circuit))
    assert stored.has_edges and set(stored.edge_names) == {*start, *grown.added}
    assert stored.provenance.params["items"] == "edge" and stored.provenance.params["candidates"] == 0
    again = run_evaluation(EvaluationSpec(expressions=(stored.id,), model="toy", task="months", n=8), cat).results[0]
    assert again.selection.level is Level.EDGE and again.value == pytest.approx(grown.faithfulness[-1], abs=1e-6)


def test_edge_extend_evaluates_only_its_shortlist_of_edges_by_attribution(sqlite_store):
    from circat.workers.engine.attribution import edge_attribution

    cat = Catalogue(sqlite_store)
    start = ["input->a3.h0<v>", "a3.h0->logits"]
    spec = EvaluationSpec(kind="extend", expressions=(", ".join(start),), model="toy", task="months",
                          level=Level.EDGE, threshold=0.3, candidates=4, n=8)
    ready, grown, _ = run_extension(spec, cat)
    graph = ready.engine.layout.graph
    score = dict(zip((graph.edge_name(i) for i in range(graph.n_edges)),
                     np.abs(edge_attribution(ready.engine).numpy()), strict=True))
    held = set(start)
    for edge in grown.added:  # each step's edge is one of the 4 best-scored edges not yet held
        remaining = sorted((e for e in score if e not in held), key=lambda e: -score[e])
        assert score[edge] >= score[remaining[3]]
        held.add(edge)
    assert grown.passes == 3 + len(grown.added)  # 4 masks fit one batch: one pass per step
    with pytest.raises(ValueError, match="candidates applies to extend"):
        EvaluationSpec(expressions=("m3",), model="toy", task="months", candidates=4)


def _toy_shape():
    from circat.workers.models import load_model

    return load_model("toy").shape


@pytest.fixture(scope="module")
def two_paths(tmp_path_factory) -> str:
    """a0.h0 carries number words and months, a0.h1 greater-than (``tests.tiny_models.save_two_paths``)."""
    from circat.workers.tasks import Split, get_task
    from circat.workers.tasks.encode import encode
    from circat.workers.tasks.render import for_tokenizer
    from tests.tiny_models import TOKENIZER, save_two_paths

    def answer_tokens(tasks: tuple[str, ...]) -> set[int]:
        out: set[int] = set()
        for t in tasks:
            b = encode(for_tokenizer(get_task(t), TOKENIZER).examples(64, seed=0, split=Split.ALL), TOKENIZER)
            out |= set(b.answers[b.answer_mask].tolist()) | set(b.wrongs[b.wrong_mask].tolist())
        return out

    sequences, other = answer_tokens(PLANTED_SEQUENCES), answer_tokens(("greater-than",))
    assert not sequences & other
    return str(save_two_paths(tmp_path_factory.mktemp("two-paths"), sequences, other))


PLANTED_SEQUENCES = ("number-words", "months")


def _values(cat: Catalogue, model: str, texts: tuple[str, ...], task: str, mode: Mode = Mode.KEEP,
            metric: str | None = None) -> list[float]:
    spec = EvaluationSpec(expressions=texts, model=model, task=task, mode=mode, metric=metric, n=N)
    return [r.value for r in run_evaluation(spec, cat).results]


def test_planted_paths_carry_their_own_tasks(sqlite_store, two_paths):
    cat = Catalogue(sqlite_store)
    found = [run_discovery(DiscoverySpec(model=two_paths, task=t, method=Method.ABLATION, n=N, levels=(0.8,)))
             .circuits[0] for t in PLANTED_SEQUENCES]
    ids = [cat.add(c) for c in found]
    assert all(set(c.node_names) - {"input", "logits"} == {"a0.h0"} for c in found)
    shared = f"shared({', '.join(ids)}; {len(ids)})"
    for task in PLANTED_SEQUENCES:  # the shared sub-circuit keeps them; the other path's knockout leaves them
        assert _values(cat, two_paths, (shared, "a0.h1"), task) == pytest.approx([1.0, 0.0], abs=1e-3)
        assert _values(cat, two_paths, ("a0.h1",), task, Mode.KNOCKOUT) == pytest.approx([1.0], abs=1e-3)
    # on the logit difference: greater-than's own metric, the probability difference, normalises over every logit
    gt = _values(cat, two_paths, (shared, "a0.h1"), "greater-than", metric="logit_diff")
    assert gt == pytest.approx([0.0, 1.0], abs=1e-3)
    spec = EvaluationSpec(kind="extend", expressions=("a0.h1",), model=two_paths, task="months", threshold=0.8, n=N)
    _, grown, _ = run_extension(spec, cat)
    assert grown.added == ["a0.h0"] and grown.reached
