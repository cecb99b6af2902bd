"""EAP and EAP-IG edge scores from gradients at every destination input.

score(u -> d) = (ablated_u - clean_u) . dm/d(input_d), summed over positions: the first-order
change of the metric when the edge carries the ablated value. EAP takes the gradient on the
clean run: with the engine's corrupted forward, one forward and one backward (the clean
source outputs are recorded in the same forward). EAP-IG (inputs variant) averages the
gradient over ``steps`` runs whose input embeddings lie between clean and ablated at
``alpha`` (0: clean, 1: ablated): MIB's points alpha = 1 - k / steps for k = 0 .. steps - 1
(the reference's corrupted + k/steps (clean - corrupted)), or the clean-inclusive points
alpha = k / steps, so one such step is exactly EAP (``IgPoints``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from service.types import IgPoints
from workers.engine.patching import (
    LOGITS_INPUT,
    PORTS,
    Hook,
    PatchingEngine,
    input_hook,
    last_logits,
    source_major,
)
from workers.metrics import task_metric
from workers.tasks import Metric


def destination_hook_names(engine: PatchingEngine) -> list[str]:
    """Hook names of every destination input, in graph order."""
    names = [input_hook(slots.layer, p) for slots in engine.layout.layers for p in (*PORTS, "mlp")]
    return [*names, LOGITS_INPUT]


def _gradient_hooks(engine: PatchingEngine, alpha: float, grads: dict[str, torch.Tensor]) -> list[Hook]:
    def accumulate(name: str) -> Callable[..., torch.Tensor]:
        def hook(x: torch.Tensor, hook: object) -> torch.Tensor:
            def save(g: torch.Tensor) -> None:
                grads[name] = grads[name] + g if name in grads else g.detach().clone()
            # A fresh tensor: the hooked value may also be the residual stream itself (MLP input),
            # and only the gradient through the destination's own input is wanted.
            mine = x.clone()
            mine.register_hook(save)
            return mine
        return hook

    ablated_input = engine.ablated[0]

    def embed(x: torch.Tensor, hook: object) -> torch.Tensor:
        x = x.detach()
        return (x + alpha * (ablated_input - x)).requires_grad_(True)

    return [("blocks.0.hook_resid_pre", embed), *((n, accumulate(n)) for n in destination_hook_names(engine))]


def _gradients(engine: PatchingEngine, alpha: float, grads: dict[str, torch.Tensor]) -> None:
    """One forward/backward; add each destination input's gradient into ``grads``."""
    hooks = _gradient_hooks(engine, alpha, grads)
    record = alpha == 0 and not engine.has_clean and engine.metric is not Metric.KL
    out = engine.source_buffer(engine.batch.clean) if record else None
    if out is not None:
        hooks = engine.recording_hooks(out)[:1] + hooks + engine.recording_hooks(out)[1:]
    with torch.enable_grad():
        final = last_logits(engine.model, engine.batch.clean, hooks, engine.batch.lengths)
        reference = None if engine.metric is not Metric.KL else engine.clean_final
        task_metric(engine.metric, final, engine.batch, reference).backward()
    if out is not None:
        engine.set_clean(out, final)


def _per_source(g: torch.Tensor) -> torch.Tensor:
    """A destination gradient ``[b, p, (h,) d]`` as rows ``[h|1, b*p*d]``."""
    return source_major(g)[0].reshape(g.shape[2] if g.dim() == 4 else 1, -1)


def ig_alphas(steps: int, points: IgPoints) -> list[float]:
    """Where the ``steps`` gradients are taken, as the share of the way from the clean input to the ablated one."""
    return [1 - k / steps if points is IgPoints.MIB else k / steps for k in range(steps)]


def edge_attribution(engine: PatchingEngine, steps: int = 1, points: IgPoints = IgPoints.CLEAN) -> torch.Tensor:
    """Scores ``[n_edges]`` in the graph's edge order: EAP for one clean-inclusive step, EAP-IG otherwise."""
    if steps < 1:
        raise ValueError(f"EAP-IG needs at least one step, got {steps}")
    grads: dict[str, torch.Tensor] = {}
    for alpha in ig_alphas(steps, points):
        _gradients(engine, alpha, grads)
    delta = (engine.ablated - engine.clean_out).reshape(engine.n_sources, -1)
    scores = torch.zeros(engine.layout.graph.n_edges, dtype=torch.float64)
    h = engine.model.shape.n_heads
    for slots in engine.layout.layers:
        s = slots.n_attn_sources
        rows = torch.cat([_per_source(grads[input_hook(slots.layer, p)]) for p in PORTS])
        block = (rows @ delta[:s].T).view(3, h, s).transpose(0, 1)
        scores[slots.attn_start:slots.mlp_start] = block.reshape(-1).double()
        n = slots.n_mlp_sources
        mlp = _per_source(grads[input_hook(slots.layer, "mlp")]) @ delta[:n].T
        scores[slots.mlp_start:slots.mlp_start + n] = mlp.reshape(-1).double()
    final = _per_source(grads[LOGITS_INPUT]) @ delta.T
    scores[engine.layout.logits_start:] = final.reshape(-1).double()
    return scores / steps
