"""EAP and EAP-IG edge scores from gradients at every destination input.

score(u -> d) = (ablated_u - clean_u) . dm/d(input_d), summed over positions: the first-order
change of the metric when the edge carries the ablated value. EAP takes the gradient on the
clean run: with the engine's corrupted forward, one forward and one backward (the clean
deltas, ablated - clean, are recorded in the same forward). EAP-IG (inputs variant) averages the
gradient over ``steps`` runs whose input embeddings lie between clean and ablated at
``alpha`` (0: clean, 1: ablated): MIB's points alpha = 1 - k / steps for k = 0 .. steps - 1
(the reference's corrupted + k/steps (clean - corrupted)), or the clean-inclusive points
alpha = k / steps, so one such step is exactly EAP (``IgPoints``). EAP-IG-activations (MIB's other
variant) moves one source's output at a time instead, on a clean run: for every source (the input, each
layer's attention, each MLP) and k = 1 .. steps, the output at alpha = 1 - k / steps; each destination's
gradient is averaged over all those passes, as the reference does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from circat.service.types import IgPoints
from circat.workers.engine.gim import GimConfig, gim_hooks, quiet_norm_edits
from circat.workers.engine.patching import (
    LOGITS_INPUT,
    PORTS,
    Hook,
    PatchingEngine,
    hook_major,
    input_hook,
    last_logits,
    source_hook_names,
    source_major,
)
from circat.workers.metrics import task_metric
from circat.workers.tasks import Metric


def destination_hook_names(engine: PatchingEngine) -> list[str]:
    """Hook names of every destination input, in graph order."""
    names = [input_hook(slots.layer, p) for slots in engine.layout.layers for p in (*PORTS, "mlp")]
    return [*names, LOGITS_INPUT]


OnGradient = Callable[[str, torch.Tensor], None]
"""called in the backward pass with a destination input's hook name and its gradient ``[b, p, (h,) d]``"""


def _gradient_hooks(engine: PatchingEngine, interpolate: list[Hook], on_gradient: OnGradient) -> list[Hook]:
    def watch(name: str) -> Callable[..., torch.Tensor]:
        def hook(x: torch.Tensor, hook: object) -> torch.Tensor:
            # A fresh tensor: the hooked value may also be the residual stream itself (MLP input),
            # and only the gradient through the destination's own input is wanted.
            mine = x.clone()
            mine.register_hook(lambda g: on_gradient(name, g))
            return mine
        return hook

    return [*interpolate, *((n, watch(n)) for n in destination_hook_names(engine))]


def _moved(delta: torch.Tensor, name: str, sl: slice, alpha: float) -> Hook:
    """A source's output moved ``alpha`` of the way from its clean value to its ablated one (``delta``: the clean
    deltas, ablated - clean), as a leaf: gradients are taken downstream of it, never through it."""
    def hook(x: torch.Tensor, hook: object) -> torch.Tensor:
        x = x.detach()
        return (x + alpha * hook_major(delta[sl].unsqueeze(0), x)).requires_grad_(True)
    return name, hook


def _gradients(engine: PatchingEngine, interpolate: list[Hook], on_gradient: OnGradient,
               recording: list[Hook], gim: GimConfig | None = None) -> torch.Tensor:
    """One forward/backward, each destination input's gradient handed to ``on_gradient`` as the backward pass
    reaches it; the final logits (``recording``: hooks recording the clean deltas, see
    ``PatchingEngine.delta_recording``, on a clean pass; ``gim``: GIM's backward modifications)."""
    hooks = recording[:1] + _gradient_hooks(engine, interpolate, on_gradient) + recording[1:]
    blocks, final_hooks = gim_hooks(engine.model, gim) if gim is not None else ([], [])
    with torch.enable_grad(), quiet_norm_edits():
        final = last_logits(engine.model, engine.batch.clean, hooks + blocks, engine.batch.lengths, final_hooks)
        reference = None if engine.metric is not Metric.KL else engine.clean_final
        task_metric(engine.metric, final, engine.batch, reference).backward()
    return final


def _per_source(g: torch.Tensor) -> torch.Tensor:
    """A destination gradient ``[b, p, (h,) d]`` as rows ``[h|1, b*p*d]``."""
    return source_major(g)[0].reshape(g.shape[2] if g.dim() == 4 else 1, -1)


def ig_alphas(steps: int, points: IgPoints) -> list[float]:
    """Where the ``steps`` gradients are taken, as the share of the way from the clean value (input embedding, or
    a source's output) to the ablated one."""
    match points:
        case IgPoints.MIB:
            return [1 - k / steps for k in range(steps)]
        case IgPoints.ACTIVATIONS:
            return [1 - k / steps for k in range(1, steps + 1)]
    return [k / steps for k in range(steps)]


def _runs(engine: PatchingEngine, delta: torch.Tensor, steps: int,
          points: IgPoints) -> list[list[Hook]]:
    """Each gradient pass's interpolation: the input embedding moved, for the inputs variants; or one source's
    output moved on a clean run, source by source, for EAP-IG-activations."""
    embedding = source_hook_names(engine.layout)[0]
    alphas = ig_alphas(steps, points)
    if points is not IgPoints.ACTIVATIONS:
        return [[_moved(delta, *embedding, alpha)] for alpha in alphas]
    return [([_moved(delta, name, sl, alpha)] if name == embedding[0] else
             [_moved(delta, *embedding, 0.0), _moved(delta, name, sl, alpha)])
            for name, sl in source_hook_names(engine.layout) for alpha in alphas]


def edge_attribution(engine: PatchingEngine, steps: int = 1, points: IgPoints = IgPoints.CLEAN,
                     gim: GimConfig | None = None) -> torch.Tensor:
    """Scores ``[n_edges]`` in the graph's edge order: EAP for one clean-inclusive step, EAP-IG otherwise (each
    destination's gradient averaged over every pass of ``_runs``); ``gim``: with GIM's modified gradients.

    Each destination's gradient becomes its edges' scores as the backward pass reaches it and is then dropped,
    so a pass holds its own graph and one destination's gradient, never every destination's (a score is linear
    in the gradient: the mean of the passes' scores is the score of the mean gradient)."""
    if steps < 1:
        raise ValueError(f"EAP-IG needs at least one step, got {steps}")
    scores = torch.zeros(engine.layout.graph.n_edges, dtype=torch.float64)
    slices = _score_slices(engine)
    # A first, clean pass records the clean deltas itself (complete before its backward), in the ablated values'
    # buffer; otherwise a plain clean run makes them, and the ablated values are dropped while the passes run.
    first_clean = points is not IgPoints.ACTIVATIONS and ig_alphas(steps, points)[0] == 0
    fresh = first_clean and not engine.knows_clean_delta and engine.metric is not Metric.KL
    recording = engine.delta_recording(consume=True) if fresh else None
    delta = recording.delta if recording is not None else engine.clean_delta
    engine.release_ablated()
    rows = delta.view(engine.n_sources, -1)

    def add(name: str, g: torch.Tensor) -> None:
        where, n_sources, port = slices[name]
        block = (_per_source(g) @ rows[:n_sources].T).double()
        if port is None:
            scores[where] += block.reshape(-1)
        else:
            scores[where].view(-1, len(PORTS), n_sources)[:, port] += block

    runs = _runs(engine, delta, steps, points)
    for k, hooks in enumerate(runs):
        final = _gradients(engine, hooks, add, recording.hooks if recording is not None and k == 0 else [], gim)
        if recording is not None and k == 0:
            engine.set_clean_delta(recording, final)
    return scores / len(runs)


def _score_slices(engine: PatchingEngine) -> dict[str, tuple[slice, int, int | None]]:
    """Per destination hook: its edges' slice of the scores, how many sources feed it, and its port's position
    among q, k, v (``None`` for an MLP's or the logits' input, whose slice is one row per source)."""
    out: dict[str, tuple[slice, int, int | None]] = {}
    for slots in engine.layout.layers:
        s = slots.n_attn_sources
        for i, port in enumerate(PORTS):
            out[input_hook(slots.layer, port)] = (slice(slots.attn_start, slots.mlp_start), s, i)
        n = slots.n_mlp_sources
        out[input_hook(slots.layer, "mlp")] = (slice(slots.mlp_start, slots.mlp_start + n), n, None)
    out[LOGITS_INPUT] = (slice(engine.layout.logits_start, engine.layout.graph.n_edges), engine.n_sources, None)
    return out
