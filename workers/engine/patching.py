"""The fast patching engine: any set of ablated edges or nodes in one forward pass.

Clean source outputs and ablated ones (zero, mean over the corrupted prompts, optionally per
position, or resampled from the corrupted run) are computed once per batch and held
source-major, ``[source, batch, pos, d_model]``. A masked run fills a buffer
``delta[m, source] = ablated - current`` as sources fire; each layer's q/k/v inputs get
``W @ delta`` with ``W = 1 - mask`` over their incoming edges (one matrix product per layer for
all heads and ports), and likewise each MLP input and the final residual: no hook per edge.
Several masks run as one batch. Masks are 1 for kept, 0 for ablated items. Every run stops at
the final norm's input and unembeds each prompt's last position only (``last_logits``): the
metric reads nothing else, and the unembedding of every position is a large share of a forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from circat.service.types import Ablation
from circat.workers.engine.layout import LayerSlots, Layout, layout_for
from circat.workers.metrics import per_example, task_metric
from circat.workers.models import LoadedModel, unembed_last
from circat.workers.tasks import Metric
from circat.workers.tasks.encode import TaskBatch

Hook = tuple[str, Callable[..., torch.Tensor | None]]
PORTS = ("q", "k", "v")
LOGITS_INPUT = "ln_final.hook_in"


def input_hook(layer: int, port: str) -> str:
    """Hook name of a destination input in ``layer``: a head port (``q``/``k``/``v``) or ``mlp``."""
    return f"blocks.{layer}.hook_{port}_input" if port in PORTS else f"blocks.{layer}.hook_mlp_in"


class _Stop(Exception):
    """Raised at the final norm's input, once each prompt's last position has been taken."""


def last_logits(model: LoadedModel, tokens: torch.Tensor, hooks: list[Hook], lengths: torch.Tensor,
                final_hooks: list[Hook] | None = None) -> torch.Tensor:
    """Logits ``[batch, vocab]`` at each prompt's last position of a hooked run, unembedding only those
    (``final_hooks`` apply to the final norm and unembedding)."""
    taken: list[torch.Tensor] = []

    def take(x: torch.Tensor, hook: object) -> None:
        taken.append(x[torch.arange(x.shape[0], device=x.device), lengths.to(x.device) - 1])
        raise _Stop

    with contextlib.suppress(_Stop):
        model.bridge.run_with_hooks(tokens, fwd_hooks=[*hooks, (LOGITS_INPUT, take)])
    if not final_hooks:
        return unembed_last(model.bridge, taken[0])
    with model.bridge.hooks(fwd_hooks=final_hooks):
        return unembed_last(model.bridge, taken[0])


def source_hook_names(layout: Layout) -> list[tuple[str, slice]]:
    """Hook name and source slice of every source: input, each layer's heads, each MLP."""
    names = [("blocks.0.hook_resid_pre", slice(0, 1))]
    for slots in layout.layers:
        names.append((f"blocks.{slots.layer}.attn.hook_result", slice(slots.head_nodes.start, slots.head_nodes.stop)))
        names.append((f"blocks.{slots.layer}.hook_mlp_out", slice(slots.mlp_node, slots.mlp_node + 1)))
    return names


def source_major(x: torch.Tensor, m: int = 1) -> torch.Tensor:
    """A source output ``[m*b, p, (h,) d]`` as ``[m, h|1, b, p, d]``."""
    shaped = x.view(m, x.shape[0] // m, *x.shape[1:])
    return shaped.unsqueeze(3).permute(0, 3, 1, 2, 4) if x.dim() == 3 else shaped.permute(0, 3, 1, 2, 4)


def hook_major(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[m, h|1, b, p, d]`` back to the hook's layout ``like`` (``[m*b, p, (h,) d]``)."""
    out = x.permute(0, 2, 3, 1, 4)
    return out.reshape(like.shape) if like.dim() == 4 else out.squeeze(3).reshape(like.shape)


class PatchingEngine:
    """Clean and ablated activations of one batch, and masked forward passes over them."""

    def __init__(self, model: LoadedModel, batch: TaskBatch, ablation: Ablation = Ablation.RESAMPLE,
                 metric: Metric = Metric.LOGIT_DIFF, per_position: bool = False):
        if Ablation(ablation) is Ablation.RESAMPLE and batch.clean.shape != batch.corrupted.shape:
            raise ValueError("resample ablation needs clean and corrupted prompts of equal length")
        self.model, self.layout, self.metric = model, layout_for(model.shape), Metric(metric)
        self.ablation, self.per_position = Ablation(ablation), per_position
        self.batch = batch.to(model.device)
        self._clean: tuple[torch.Tensor, torch.Tensor] | None = None
        self.ablated = self._ablated_sources()

    @property
    def n_sources(self) -> int:
        return self.layout.n_sources

    @property
    def clean_out(self) -> torch.Tensor:
        """Clean source outputs ``[source, batch, pos, d_model]`` (computed on first use)."""
        return self._clean_run()[0]

    @property
    def clean_final(self) -> torch.Tensor:
        """The clean model's final-position logits ``[batch, vocab]``."""
        return self._clean_run()[1]

    def _clean_run(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._clean is None:
            self.set_clean(*self.sources(self.batch.clean, self.batch.lengths))
        assert self._clean is not None
        return self._clean

    @property
    def has_clean(self) -> bool:
        """Whether the clean run is known yet."""
        return self._clean is not None

    def set_clean(self, out: torch.Tensor, final: torch.Tensor) -> None:
        """Record the clean run when another pass (EAP's gradient pass) has computed it."""
        self._clean = (out, final.detach())

    def source_buffer(self, tokens: torch.Tensor) -> torch.Tensor:
        b, p = tokens.shape
        return torch.empty((self.n_sources, b, p, self.model.shape.d_model), device=tokens.device,
                           dtype=self.model.dtype)

    def recording_hooks(self, out: torch.Tensor) -> list[Hook]:
        """Hooks that copy every source's output into ``out`` ``[source, batch, pos, d_model]``."""
        def store(sl: slice) -> Callable[..., None]:
            def hook(x: torch.Tensor, hook: object) -> None:
                out[sl] = source_major(x.detach())[0]
            return hook
        return [(name, store(sl)) for name, sl in source_hook_names(self.layout)]

    @torch.no_grad()
    def sources(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every source's output ``[source, batch, pos, d_model]`` and the last-position logits of a plain run."""
        out = self.source_buffer(tokens)
        return out, last_logits(self.model, tokens, self.recording_hooks(out), lengths)

    def _ablated_sources(self) -> torch.Tensor:
        """Broadcastable ``[source, batch|1, pos|1, d_model]`` values an ablated source carries."""
        if self.ablation is Ablation.ZERO:
            return torch.zeros((self.n_sources, 1, 1, self.model.shape.d_model), device=self.model.device,
                               dtype=self.model.dtype)
        corrupted, _ = self.sources(self.batch.corrupted, self.batch.corrupted_lengths)
        if self.ablation is Ablation.RESAMPLE:
            return corrupted
        p = corrupted.shape[2]
        valid = (torch.arange(p, device=corrupted.device) < self.batch.corrupted_lengths[:, None]).to(corrupted.dtype)
        weighted = corrupted * valid[None, :, :, None]
        if self.per_position:
            return weighted.sum(1, keepdim=True) / valid.sum(0).clamp(min=1)[None, None, :, None]
        return weighted.sum((1, 2), keepdim=True) / valid.sum()

    def metric_of(self, final: torch.Tensor, per_prompt: bool = False) -> torch.Tensor:
        """The task metric of each mask's ``[mask, batch, vocab]`` final logits -> ``[mask]``, or per prompt
        ``[mask, batch]`` (only KL reads the clean run's logits, so no other metric makes the clean run)."""
        reference = self.clean_final if self.metric is Metric.KL else None
        of = per_example if per_prompt else task_metric
        return torch.stack([of(self.metric, f, self.batch, reference) for f in final])

    @torch.no_grad()
    def run_nodes(self, keep: torch.Tensor) -> torch.Tensor:
        """Final logits ``[mask, batch, vocab]`` with the nodes where ``keep`` is 0 ablated."""
        drop = 1 - keep.to(self.model.device, self.model.dtype)
        m = drop.shape[0]

        def patch(sl: slice) -> Callable[..., torch.Tensor]:
            def hook(x: torch.Tensor, hook: object) -> torch.Tensor:
                cur = source_major(x, m)
                w = drop[:, sl].view(m, -1, 1, 1, 1)
                return hook_major(cur + w * (self.ablated[sl].unsqueeze(0) - cur), x)
            return hook

        hooks = [(name, patch(sl)) for name, sl in source_hook_names(self.layout) if drop[:, sl].any()]
        return self._final(hooks, m)

    @torch.no_grad()
    def run_edges(self, keep: torch.Tensor, reference: torch.Tensor | None = None,
                  first: torch.Tensor | None = None) -> torch.Tensor:
        """Final logits ``[mask, batch, vocab]`` with the edges where ``keep`` is 0 ablated.

        A dropped edge carries its source's ``reference`` output (default: the ablated one; the clean
        one freezes it instead). Sources where ``first`` ``[mask, source]`` is 1 emit their ablated output.
        """
        return self._final(self.edge_hooks(keep, reference, first), keep.shape[0])

    def masked_logits(self, keep: torch.Tensor) -> torch.Tensor:
        """``run_edges`` differentiable in ``keep``: fractional coefficients mix each edge's source output and
        its ablated value (learned masks train through it)."""
        return self._final(self.edge_hooks(keep), keep.shape[0])

    def edge_hooks(self, keep: torch.Tensor, reference: torch.Tensor | None = None,
                   first: torch.Tensor | None = None) -> list[Hook]:
        """The hooks of a masked run (see ``run_edges``); differentiable when run with gradients on."""
        drop = 1 - keep.to(self.model.device, self.model.dtype)
        m = drop.shape[0]
        ref = self.ablated if reference is None else reference
        emit = None if first is None else first.to(self.model.device, self.model.dtype)
        delta = _Deltas(m, self.n_sources)
        hooks: list[Hook] = [(name, self._source_hook(delta, sl, ref, emit)) for name, sl in
                             source_hook_names(self.layout)]
        for slots in self.layout.layers:
            hooks += _layer_corrections(slots, drop, delta, self.model.shape.n_heads)
        logits = drop[:, self.layout.logits_start:]
        if logits.any():
            hooks.append((LOGITS_INPUT, _add_resid(delta, logits)))
        return hooks

    def _source_hook(self, delta: _Deltas, sl: slice, reference: torch.Tensor,
                     emit: torch.Tensor | None) -> Callable[..., torch.Tensor | None]:
        m = delta.m
        patch = emit is not None and bool(emit[:, sl].any())

        def hook(x: torch.Tensor, hook: object) -> torch.Tensor | None:
            cur = source_major(x, m)
            if patch:
                assert emit is not None
                cur = cur + emit[:, sl].view(m, -1, 1, 1, 1) * (self.ablated[sl].unsqueeze(0) - cur)
            delta.record(sl, reference[sl].unsqueeze(0), cur)
            return hook_major(cur, x) if patch else None
        return hook

    def _final(self, hooks: list[Hook], m: int) -> torch.Tensor:
        final = last_logits(self.model, self.batch.clean.repeat(m, 1), hooks, self.batch.lengths.repeat(m))
        return final.view(m, len(self.batch), -1)

    def evaluate_edges(self, keep: torch.Tensor, per_prompt: bool = False) -> torch.Tensor:
        """The task metric ``[mask]`` (or ``[mask, batch]``) of each edge mask."""
        return self.metric_of(self.run_edges(keep), per_prompt)

    def evaluate_nodes(self, keep: torch.Tensor, per_prompt: bool = False) -> torch.Tensor:
        """The task metric ``[mask]`` (or ``[mask, batch]``) of each node mask."""
        return self.metric_of(self.run_nodes(keep), per_prompt)


class _Deltas:
    """``reference - current`` of every source ``[m, source, b, p, d]``, filled as sources fire.

    Without gradients it is one preallocated buffer written in place; with gradients on, a list of
    per-source tensors joined when read, so autograd sees no in-place writes.
    """

    def __init__(self, m: int, n_sources: int):
        self.m, self.n_sources = m, n_sources
        self.buffer: torch.Tensor | None = None
        self.parts: list[torch.Tensor] = []

    def record(self, sl: slice, reference: torch.Tensor, current: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            self.parts.append(reference - current)
            return
        if self.buffer is None:
            self.buffer = current.new_empty((self.m, self.n_sources, *current.shape[2:]))
        torch.sub(reference, current, out=self.buffer[:, sl])

    def upto(self, n: int) -> torch.Tensor:
        """The first ``n`` sources' deltas ``[m, n, b, p, d]``."""
        if self.buffer is not None:
            return self.buffer[:, :n]
        return torch.cat(self.parts, 1)[:, :n]


def _weighted(delta: _Deltas, w: torch.Tensor) -> torch.Tensor:
    """``sum_s w[m, r, s] * delta[m, s]`` -> ``[m, r, b, p, d]`` as one batched matrix product."""
    m, n = w.shape[0], w.shape[2]
    if delta.buffer is None and torch.is_grad_enabled():
        return _WeightedParts.apply(w, *delta.parts)
    d = delta.upto(n)
    return torch.matmul(w, d.reshape(m, n, -1)).view(m, w.shape[1], *d.shape[2:])


class _WeightedParts(torch.autograd.Function):
    """``_weighted`` over the per-source parts of a differentiable run, saving the parts themselves (which the run
    holds anyway) instead of their concatenation: autograd would keep one concatenated copy of every earlier
    source per destination layer, memory quadratic in depth; the backward joins them again, one layer at a time."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, w: torch.Tensor, *parts: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w, *parts)
        m, n = w.shape[0], w.shape[2]
        d = torch.cat(parts, 1)[:, :n]
        return torch.matmul(w, d.reshape(m, n, -1)).view(m, w.shape[1], *d.shape[2:])

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        w, *parts = ctx.saved_tensors  # type: ignore[attr-defined]
        m, r, n = w.shape
        d = torch.cat(parts, 1)[:, :n].reshape(m, n, -1)
        g = g.reshape(m, r, -1)
        grad_w = torch.matmul(g, d.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_d = torch.matmul(w.transpose(1, 2), g)
        sizes = [p.shape[1] for p in parts]
        grads: list[torch.Tensor | None] = []
        start = 0
        for p, size in zip(parts, sizes, strict=True):
            piece = grad_d[:, start:min(start + size, n)]
            if piece.shape[1] < size:
                piece = torch.cat([piece, piece.new_zeros((m, size - piece.shape[1], piece.shape[2]))], 1)
            grads.append(piece.reshape(p.shape))
            start += size
        return (grad_w, *grads)


def _layer_corrections(slots: LayerSlots, drop: torch.Tensor, delta: _Deltas, n_heads: int) -> list[Hook]:
    """Hooks for one layer: q/k/v of all heads from one product (computed at the first port hook), the MLP."""
    m, s = drop.shape[0], slots.n_attn_sources
    attn = drop[:, slots.attn_start:slots.mlp_start].view(m, n_heads, 3, s).transpose(1, 2).reshape(m, 3 * n_heads, s)
    hooks: list[Hook] = []
    if attn.any():
        cache: dict[str, torch.Tensor] = {}

        def port_hook(i: int) -> Callable[..., torch.Tensor]:
            def hook(x: torch.Tensor, hook: object) -> torch.Tensor:
                if "c" not in cache:
                    w = _weighted(delta, attn)
                    cache["c"] = w.view(m, 3, n_heads, *w.shape[2:])
                return x + hook_major(cache["c"][:, i], x)
            return hook
        hooks += [(input_hook(slots.layer, p), port_hook(i)) for i, p in enumerate(PORTS)]
    mlp = drop[:, slots.mlp_start:slots.mlp_start + slots.n_mlp_sources]
    if mlp.any():
        hooks.append((input_hook(slots.layer, "mlp"), _add_resid(delta, mlp)))
    return hooks


def _add_resid(delta: _Deltas, w: torch.Tensor) -> Callable[..., torch.Tensor]:
    """Hook adding ``sum_s w[m, s] * delta[m, s]`` to a residual input ``[m*b, p, d]``."""
    def hook(x: torch.Tensor, hook: object) -> torch.Tensor:
        return x + hook_major(_weighted(delta, w[:, None]), x)
    return hook
