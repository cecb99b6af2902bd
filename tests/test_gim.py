"""GIM's gradient modifications, each on its own with a known answer, and EAP with GIM as a method."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from circat.service.types import Ablation
from circat.workers.engine.attribution import LOGITS_INPUT, _gradients, _moved, edge_attribution
from circat.workers.engine.gim import GimConfig, frozen_norm, scale_grad, softmax_backward_at
from circat.workers.engine.patching import PatchingEngine, source_hook_names
from circat.workers.metrics import task_metric
from circat.workers.tasks.encode import encode
from tests.test_discover_cli import run
from tests.test_engine import NUMERALS

NONE = GimConfig(freeze_norm=False, temperature=1.0, q_scale=1, k_scale=1, v_scale=1, gate_scale=1, up_scale=1)
"""every modification off: each test turns on one"""


def test_the_modified_functions_change_gradients_only():
    x = torch.randn(3, 5, requires_grad=True)
    y = scale_grad(x, 0.25)
    assert torch.equal(y, x)
    (g,) = torch.autograd.grad((y * torch.arange(5.0)).sum(), x)
    assert torch.equal(g, 0.25 * torch.arange(5.0).expand(3, 5))
    scores = torch.randn(2, 4, 6, requires_grad=True)
    pattern = torch.softmax(scores, -1)
    out = softmax_backward_at(scores, pattern.detach(), 2.0)
    assert torch.equal(out, pattern)
    g_out = torch.randn(2, 4, 6)
    (mine,) = torch.autograd.grad((out * g_out).sum(), scores)
    # GIM's backward is the softmax Jacobian evaluated at scores / T: T times the gradient of softmax(scores / T)
    (at_t,) = torch.autograd.grad((torch.softmax(scores / 2.0, -1) * g_out).sum(), scores)
    assert torch.allclose(mine, 2.0 * at_t, atol=1e-6)
    (plain,) = torch.autograd.grad((torch.softmax(scores, -1) * g_out).sum(), scores)
    (at_one,) = torch.autograd.grad((softmax_backward_at(scores, pattern.detach(), 1.0) * g_out).sum(), scores)
    assert torch.allclose(at_one, plain, atol=1e-6)


@pytest.mark.parametrize("rms", [False, True])
def test_a_frozen_norm_passes_its_output_and_differentiates_with_a_constant_statistic(rms):
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    centred = x if rms else x - x.mean(-1, keepdim=True)
    scale = (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
    normalized = centred / scale
    out = frozen_norm(x, normalized, scale, rms)
    assert torch.equal(out, normalized)
    g = torch.randn(2, 3, 8, dtype=torch.float64)
    (mine,) = torch.autograd.grad((out * g).sum(), x, retain_graph=True)
    (expected,) = torch.autograd.grad(((centred / scale.detach()) * g).sum(), x, retain_graph=True)
    torch.testing.assert_close(mine, expected, atol=1e-12, rtol=1e-12)
    (whole,) = torch.autograd.grad((normalized * g).sum(), x)
    assert not torch.allclose(mine, whole)


def _engine(tiny) -> PatchingEngine:
    return PatchingEngine(tiny, encode(NUMERALS.examples(4, seed=0), tiny.tokenizer), Ablation.RESAMPLE)


def _last_layer_ratios(engine: PatchingEngine, config: GimConfig) -> dict[str, float]:
    """Per port of the last layer's destinations, the ratio of GIM's scores to plain EAP's (NaN unless every one of
    that port's scored edges has the same ratio)."""
    plain, gim = edge_attribution(engine), edge_attribution(engine, gim=config)
    graph = engine.layout.graph
    last = engine.model.shape.n_layers - 1
    by_port: dict[str, list[float]] = {}
    for slot, dest in enumerate(graph.dests):
        rows = range(int(graph.slot_start[slot]), int(graph.slot_start[slot + 1]))
        if dest.node.layer == last:
            by_port.setdefault(dest.port.value, []).extend(
                float(gim[e] / plain[e]) for e in rows if abs(float(plain[e])) > 1e-10)
    return {port: float(np.median(r)) if np.allclose(r, np.median(r), rtol=1e-3) else float("nan")
            for port, r in by_port.items()}


def test_qkv_scales_multiply_the_last_layers_attention_inputs_gradients(tiny):
    config = GimConfig(**{**NONE.__dict__, "q_scale": 0.25, "k_scale": 0.25, "v_scale": 0.5})
    ratios = _last_layer_ratios(_engine(tiny), config)
    assert ratios["q"] == pytest.approx(0.25, rel=1e-3) and ratios["k"] == pytest.approx(0.25, rel=1e-3)
    assert ratios["v"] == pytest.approx(0.5, rel=1e-3) and ratios["mlp"] == pytest.approx(1.0, rel=1e-3)


def test_gated_mlp_scales_halve_the_last_mlps_input_gradient_on_a_gated_model(tiny):
    config = GimConfig(**{**NONE.__dict__, "gate_scale": 0.5, "up_scale": 0.5})
    ratios = _last_layer_ratios(_engine(tiny), config)
    gated = "blocks.0.mlp.gate.hook_out" in tiny.bridge.hook_dict
    assert ratios["mlp"] == pytest.approx(0.5 if gated else 1.0, rel=1e-3)
    if not gated:  # on a gated model the last attention's gradients pass partly through the scaled MLP
        assert ratios["q"] == pytest.approx(1.0, rel=1e-3)


def test_softmax_temperature_moves_query_and_key_gradients_only(tiny):
    engine = _engine(tiny)
    config = GimConfig(**{**NONE.__dict__, "temperature": 2.0})
    ratios = _last_layer_ratios(engine, config)
    assert ratios["v"] == pytest.approx(1.0, rel=1e-3) and ratios["mlp"] == pytest.approx(1.0, rel=1e-3)
    assert not torch.allclose(edge_attribution(engine), edge_attribution(engine, gim=config))


def test_frozen_final_norm_equals_the_gradient_of_a_norm_with_constant_statistics(tiny):
    engine = _engine(tiny)
    grads: dict[str, torch.Tensor] = {}
    embedding = source_hook_names(engine.layout)[0]
    _gradients(engine, [_moved(engine.clean_delta, *embedding, 0.0)], grads.__setitem__, [],
               gim=GimConfig(**{**NONE.__dict__, "freeze_norm": True}))
    bridge, batch = engine.model.bridge, engine.batch
    captured = {}
    with torch.no_grad():
        bridge.run_with_hooks(batch.clean, fwd_hooks=[(LOGITS_INPUT, lambda x, hook: captured.setdefault("x", x))])
    last = torch.arange(len(batch)), batch.lengths - 1
    x = captured["x"][last].clone().requires_grad_(True)
    params = dict(bridge.ln_final.named_parameters())
    weight = params["_original_component.weight"]
    rms = bridge.cfg.normalization_type == "RMS"
    centred = x if rms else x - x.mean(-1, keepdim=True)
    scale = ((centred.pow(2).mean(-1, keepdim=True) + bridge.cfg.eps).sqrt()).detach()  # the constant statistic
    normed = centred / scale * weight + (0 if rms else params["_original_component.bias"])
    logits = normed @ dict(bridge.unembed.named_parameters())["_original_component.weight"].T
    (expected,) = torch.autograd.grad(task_metric(engine.metric, logits, batch), x)
    assert torch.allclose(grads[LOGITS_INPUT][last], expected, atol=1e-6)
    plain: dict[str, torch.Tensor] = {}
    _gradients(engine, [_moved(engine.clean_delta, *embedding, 0.0)], plain.__setitem__, [])
    assert not torch.allclose(plain[LOGITS_INPUT][last], expected, atol=1e-6)


def test_eap_and_eap_ig_take_gim_gradients_as_a_method():
    out = json.loads(run("discover", "--model", "toy", "--task", "months", "--method", "eap", "--gradient", "gim",
                         "--threshold", "0.8", "--n", "8", "--json").stdout)
    assert out["circuits"][0]["faithfulness"] >= 0.8 and out["spec"]["gradient"] == "gim"
    refused = run("discover", "--model", "toy", "--task", "months", "--method", "ablation", "--gradient", "gim",
                  "--json", ok=False)
    assert "gradient applies to eap and eap-ig" in refused.stdout
    ig = json.loads(run("discover", "--model", "toy", "--task", "months", "--method", "eap-ig", "--gradient", "gim",
                        "--top-n", "40", "--n", "8", "--json").stdout)
    plain = json.loads(run("discover", "--model", "toy", "--task", "months", "--method", "eap-ig", "--top-n", "40",
                           "--n", "8", "--json").stdout)
    assert ig["circuits"][0]["id"] != plain["circuits"][0]["id"]  # GIM's settings are in the provenance


def test_the_report_shows_the_methods_leaderboard(tmp_path):
    ids = {}
    for name, extra in (("eap", ["--method", "eap"]), ("gim", ["--method", "eap", "--gradient", "gim"]),
                        ("acdc", ["--method", "acdc"])):
        ids[name] = json.loads(run("discover", "--model", "toy", "--task", "months", *extra, "--n", "8",
                                   *([] if name == "acdc" else ["--threshold", "0.8"]), "--json").stdout)
    page = tmp_path / "r.html"
    run("report", *(d["circuits"][0]["id"] for d in ids.values()), "--methods", "--out", str(page))
    html = page.read_text()
    section = html[html.index("<h2>Methods</h2>"):html.index("<h2>Faithfulness curves</h2>")]
    assert "<h3>toy / months</h3>" in section and section.count("<tr>") == 4  # the header and three circuits
    assert "<td>eap + GIM</td>" in section and "<td>acdc</td>" in section
    assert f"<td>{ids['eap']['summary']['cpr']:.3f}</td>" in section
    assert section.count('class="curve"') >= 4  # every edge circuit's two curves on the task's plot
    run("report", ids["eap"]["circuits"][0]["id"], "--out", str(page))
    assert "<h2>Methods</h2>" not in page.read_text()
