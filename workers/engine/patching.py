"""The fast patching engine: any set of ablated edges or nodes in one forward pass.

Ablated source outputs (zero, mean over the corrupted prompts, optionally per position, or
resampled from the corrupted run) and the clean run's ``ablated - clean`` deltas are computed once
per batch and held source-major, ``[source, batch, pos, d_model]``; the clean outputs themselves only
when a frozen or clean reference asks for them. A gradient method that reads only the deltas (EAP,
EAP-IG) lets its clean pass write them over the resampled values' buffer, which is computed again
when a masked run next needs it: one full buffer instead of three while its gradients run. A masked run fills a buffer
``delta[m, source] = ablated - current`` as sources fire; each layer's q/k/v inputs get
``W @ delta`` with ``W = 1 - mask`` over their incoming edges (one sum per layer for all heads and
ports, in the form ``corrections`` picks for each mask), and likewise each MLP input and the final
residual: no hook per edge. Several masks run as one batch. Masks are 1 for kept, 0 for ablated
items. Every run stops at the final norm's input and unembeds each prompt's last position only
(``last_logits``): the metric reads nothing else, and the unembedding of every position is a large
share of a forward.
A run without gradients whose masks change nothing before some layer (no dropped edge into it, no
source before it emitting its ablated value, as in ACDC's trials of a late destination) starts at
that layer from the clean run's residual stream (``start_layer``): the earlier blocks are skipped
(the bridge's ``start_at_layer`` still calls them, so their computation is swapped out meanwhile).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from circat.service.types import Ablation
from circat.workers.engine.corrections import Deltas, Scratch, correction
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


class _Skipped(torch.nn.Module):
    """Stands in for a skipped block's computation: hands its input on unchanged."""

    def forward(self, *args: torch.Tensor, **kwargs: object) -> object:
        return args[0] if args else kwargs["hidden_states"]


@contextlib.contextmanager
def _skipping(model: LoadedModel, n: int) -> Iterator[None]:
    """The first ``n`` blocks compute nothing (the bridge's ``start_at_layer`` replaces their output)."""
    blocks = list(model.bridge.blocks)[:n]
    kept = [block._modules["_original_component"] for block in blocks]
    try:
        for block in blocks:
            block._modules["_original_component"] = _Skipped()
        yield
    finally:
        for block, original in zip(blocks, kept, strict=True):
            block._modules["_original_component"] = original


def last_logits(model: LoadedModel, tokens: torch.Tensor, hooks: list[Hook], lengths: torch.Tensor,
                final_hooks: list[Hook] | None = None, start: tuple[int, torch.Tensor] | None = None,
                rows: int | None = None) -> torch.Tensor:
    """Logits ``[batch, vocab]`` at each prompt's last position of a hooked run, unembedding only those
    (``final_hooks`` apply to the final norm and unembedding; ``start``: a layer and the residual stream
    ``[batch, pos, d_model]`` entering it, the run then computing only that layer and the later ones; ``rows``:
    unembed that many prompts at a time, one mask's, so that a mask's logits do not depend on the masks beside it:
    a matrix product's rounding may depend on its number of rows, most of all for few rows)."""
    taken: list[torch.Tensor] = []

    def take(x: torch.Tensor, hook: object) -> None:
        taken.append(x[torch.arange(x.shape[0], device=x.device), lengths.to(x.device) - 1])
        raise _Stop

    layer, resid = start if start is not None else (0, tokens)
    with contextlib.suppress(_Stop), _skipping(model, layer):
        model.bridge.run_with_hooks(resid, fwd_hooks=[*hooks, (LOGITS_INPUT, take)],
                                    **({"start_at_layer": layer} if layer else {}))
    chunks = taken[0].split(rows) if rows else (taken[0],)
    with model.bridge.hooks(fwd_hooks=final_hooks) if final_hooks else contextlib.nullcontext():
        return torch.cat([unembed_last(model.bridge, chunk) for chunk in chunks])


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


@dataclass(frozen=True)
class CleanRecording:
    """What a clean pass records through ``hooks``: every source's ``ablated - clean`` ``[source, b, p, d]`` and,
    unless already known, the residual stream entering each block ``[layer, b, p, d]``."""

    delta: torch.Tensor
    resid: torch.Tensor | None
    hooks: list[Hook]


class PatchingEngine:
    """Clean and ablated activations of one batch, and masked forward passes over them."""

    def __init__(self, model: LoadedModel, batch: TaskBatch, ablation: Ablation = Ablation.RESAMPLE,
                 metric: Metric = Metric.LOGIT_DIFF, per_position: bool = False):
        if Ablation(ablation) is Ablation.RESAMPLE and batch.clean.shape != batch.corrupted.shape:
            raise ValueError("resample ablation needs clean and corrupted prompts of equal length")
        self.model, self.layout, self.metric = model, layout_for(model.shape), Metric(metric)
        self.ablation, self.per_position = Ablation(ablation), per_position
        self.batch = batch.to(model.device)
        self._clean_out: torch.Tensor | None = None
        self._clean_final: torch.Tensor | None = None
        self._clean_delta: torch.Tensor | None = None
        self._resid: torch.Tensor | None = None
        self._prefix_totals: dict[int, torch.Tensor] = {}
        self._scratch = Scratch()
        self._ablated: torch.Tensor | None = self._ablated_sources()

    @property
    def n_sources(self) -> int:
        return self.layout.n_sources

    @property
    def ablated(self) -> torch.Tensor:
        """Broadcastable ``[source, batch|1, pos|1, d_model]`` values an ablated source carries (computed again
        when a gradient pass has turned their buffer into the clean deltas, see ``delta_recording``)."""
        if self._ablated is None:
            self._ablated = self._ablated_sources()
        return self._ablated

    @property
    def clean_out(self) -> torch.Tensor:
        """Clean source outputs ``[source, batch, pos, d_model]`` (computed on first use: only frozen or clean
        references read them; masked runs read the deltas)."""
        if self._clean_out is None:
            resid, hooks = self._resid_recording()
            self._clean_out, final = self.sources(self.batch.clean, self.batch.lengths, hooks)
            self._resid = self._resid if resid is None else resid
            if self._clean_final is None:
                self._clean_final = final
        return self._clean_out

    @property
    def clean_final(self) -> torch.Tensor:
        """The clean model's final-position logits ``[batch, vocab]``."""
        if self._clean_final is None:
            self._clean_pass()
        assert self._clean_final is not None
        return self._clean_final

    @property
    def clean_delta(self) -> torch.Tensor:
        """``ablated - clean`` of every source ``[source, batch, pos, d_model]`` (computed on first use)."""
        if self._clean_delta is None:
            if self._clean_out is not None:
                self._clean_delta = self.ablated - self._clean_out
            else:
                self._clean_pass()
        assert self._clean_delta is not None
        return self._clean_delta

    @property
    def clean_resid(self) -> torch.Tensor:
        """The clean run's residual stream entering each block ``[layer, batch, pos, d_model]`` (on first use)."""
        if self._resid is None:
            resid, hooks = self._resid_recording()
            with torch.no_grad():
                last_logits(self.model, self.batch.clean, hooks, self.batch.lengths)
            self._resid = resid
        assert self._resid is not None
        return self._resid

    def _clean_pass(self) -> None:
        """A clean run recording its final logits, every source's delta and the residual stream."""
        recording = self.delta_recording(consume=False)
        with torch.no_grad():
            final = last_logits(self.model, self.batch.clean, recording.hooks, self.batch.lengths)
        self.set_clean_delta(recording, final)

    def delta_recording(self, consume: bool) -> CleanRecording:
        """Buffers and hooks that record each source's ``ablated - output`` (and the residual stream, when not
        known yet) during a clean run (another pass's: EAP's gradient pass), to hand to ``set_clean_delta``
        afterwards. ``consume``: write into the ablated values' own buffer when they are per prompt (resample),
        which then holds the deltas and no longer the ablated values (computed again when next needed): one
        buffer instead of two while the pass runs."""
        ablated = self.ablated
        delta = ablated if consume and self.ablation is Ablation.RESAMPLE else self.source_buffer(self.batch.clean)
        if delta is ablated:
            self._ablated = None
        resid, resid_hooks = self._resid_recording()
        hooks = [(name, _record_delta(delta, ablated, sl)) for name, sl in source_hook_names(self.layout)]
        return CleanRecording(delta, resid, hooks + resid_hooks)

    @property
    def knows_clean_delta(self) -> bool:
        """Whether the clean deltas are known yet."""
        return self._clean_delta is not None

    def set_clean_delta(self, recording: CleanRecording, final: torch.Tensor) -> None:
        """Keep what a clean run recorded (see ``delta_recording``) and its final logits."""
        self._clean_delta, self._clean_final = recording.delta, final.detach()
        self._resid = self._resid if recording.resid is None else recording.resid

    def release_ablated(self) -> None:
        """Drop the ablated values until they are next needed (a gradient method that reads only the deltas)."""
        if self._clean_delta is not None:
            self._ablated = None

    def _prefix_delta(self, reference: torch.Tensor | None, n: int) -> torch.Tensor:
        """``reference - clean`` of the first ``n`` sources (``reference``: default the ablated values)."""
        if reference is not None:
            return reference[:n] - self.clean_out[:n]
        return self.clean_delta[:n]

    def _prefix_total(self, reference: torch.Tensor | None, n: int) -> torch.Tensor:
        """The sum of ``_prefix_delta`` over its ``n`` sources ``[b, p, d]`` (kept per ``n`` for the ablated one)."""
        if reference is not None:
            return self._prefix_delta(reference, n).sum(0)
        if n not in self._prefix_totals:
            self._prefix_totals[n] = self._prefix_delta(None, n).sum(0)
        return self._prefix_totals[n]

    def start_layer(self, keep: torch.Tensor, first: torch.Tensor | None = None) -> int:
        """The first layer a run of ``keep`` masks ``[mask, edge]`` (and ``first`` ``[mask, source]``) must compute:
        every layer before it keeps all its edges and none of its sources emits its ablated value, so it runs as in
        the clean run. 0 with gradients on, which must reach every mask entry."""
        if torch.is_grad_enabled():
            return 0
        dropped, emitted = (keep != 1).any(0).cpu(), None if first is None else first.any(0).cpu()
        for slots in self.layout.layers:
            begin = 0 if slots.layer == 0 else slots.head_nodes.start
            if (bool(dropped[slots.attn_start:slots.mlp_start + slots.n_mlp_sources].any())
                    or (emitted is not None and bool(emitted[begin:slots.mlp_node + 1].any()))):
                return slots.layer
        return len(self.layout.layers) - 1

    def source_buffer(self, tokens: torch.Tensor) -> torch.Tensor:
        b, p = tokens.shape
        return torch.empty((self.n_sources, b, p, self.model.shape.d_model), device=tokens.device,
                           dtype=self.model.dtype)

    def _resid_recording(self) -> tuple[torch.Tensor | None, list[Hook]]:
        """A buffer ``[layer, batch, pos, d_model]`` and hooks that copy the clean run's residual stream entering
        each block into it (``None`` and no hooks when it is known already)."""
        if self._resid is not None:
            return None, []
        resid = torch.empty((len(self.layout.layers), *self.batch.clean.shape, self.model.shape.d_model),
                            device=self.model.device, dtype=self.model.dtype)
        return resid, [(f"blocks.{i}.hook_resid_pre", _store(resid, slice(i, i + 1))) for i in range(len(resid))]

    @torch.no_grad()
    def sources(self, tokens: torch.Tensor, lengths: torch.Tensor,
                hooks: list[Hook] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every source's output ``[source, batch, pos, d_model]`` and the last-position logits of a plain run
        (``hooks``: more hooks of the same run)."""
        out = self.source_buffer(tokens)
        recording = [(name, _store(out, sl)) for name, sl in source_hook_names(self.layout)]
        return out, last_logits(self.model, tokens, recording + (hooks or []), lengths)

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
        start = self.start_layer(keep, first)
        return self._final(self.edge_hooks(keep, reference, first, start), keep.shape[0], start)

    def masked_logits(self, keep: torch.Tensor) -> torch.Tensor:
        """``run_edges`` differentiable in ``keep``: fractional coefficients mix each edge's source output and
        its ablated value (learned masks train through it)."""
        return self._final(self.edge_hooks(keep), keep.shape[0])

    def edge_hooks(self, keep: torch.Tensor, reference: torch.Tensor | None = None,
                   first: torch.Tensor | None = None, start: int = 0) -> list[Hook]:
        """The hooks of a masked run (see ``run_edges``); differentiable when run with gradients on. From
        ``start`` > 0 (see ``start_layer``), the run begins at that layer: the earlier sources' deltas are the
        clean run's."""
        drop = 1 - keep.to(self.model.device, self.model.dtype)
        on_cpu, grad = drop.detach().cpu(), torch.is_grad_enabled()
        ref = self.ablated if reference is None else reference
        emit = None if first is None else first.to(self.model.device, self.model.dtype)
        skipped = self.layout.layers[start].n_attn_sources if start else 0
        delta = Deltas(drop.shape[0], self.n_sources, self._prefix_delta(reference, skipped) if skipped else None,
                       scratch=self._scratch)
        hooks: list[Hook] = [(name, self._source_hook(delta, sl, ref, emit)) for name, sl in
                             source_hook_names(self.layout) if sl.start >= skipped]
        for slots in self.layout.layers:
            hooks += _layer_corrections(slots, (drop, on_cpu), delta, self.model.shape.n_heads, grad)
        logits = slice(self.layout.logits_start, None)
        if bool(on_cpu[:, logits].any()):
            hooks.append((LOGITS_INPUT, _add_resid(delta, drop[:, logits], on_cpu[:, logits], grad)))
        if delta.totals and skipped:
            delta.prefix_total = self._prefix_total(reference, skipped)
        return hooks

    def _source_hook(self, delta: Deltas, sl: slice, reference: torch.Tensor,
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

    def _final(self, hooks: list[Hook], m: int, start: int = 0) -> torch.Tensor:
        begin = (start, self.clean_resid[start].repeat(m, 1, 1)) if start else None
        final = last_logits(self.model, self.batch.clean.repeat(m, 1), hooks, self.batch.lengths.repeat(m),
                            start=begin, rows=len(self.batch))
        return final.view(m, len(self.batch), -1)

    def evaluate_edges(self, keep: torch.Tensor, per_prompt: bool = False) -> torch.Tensor:
        """The task metric ``[mask]`` (or ``[mask, batch]``) of each edge mask."""
        return self.metric_of(self.run_edges(keep), per_prompt)

    def evaluate_nodes(self, keep: torch.Tensor, per_prompt: bool = False) -> torch.Tensor:
        """The task metric ``[mask]`` (or ``[mask, batch]``) of each node mask."""
        return self.metric_of(self.run_nodes(keep), per_prompt)


def _record_delta(out: torch.Tensor, ablated: torch.Tensor, sl: slice) -> Callable[..., None]:
    """A hook that writes ``ablated[sl] - value`` (source-major) into ``out[sl]`` (``out`` may be ``ablated``)."""
    def hook(x: torch.Tensor, hook: object) -> None:
        torch.sub(ablated[sl], source_major(x.detach())[0], out=out[sl])
    return hook


def _store(out: torch.Tensor, sl: slice) -> Callable[..., None]:
    """A hook that copies its value ``[b, p, (h,) d]``, source-major, into ``out[sl]``."""
    def hook(x: torch.Tensor, hook: object) -> None:
        out[sl] = source_major(x.detach())[0]
    return hook


def _layer_corrections(slots: LayerSlots, drop: tuple[torch.Tensor, torch.Tensor], delta: Deltas, n_heads: int,
                       grad: bool) -> list[Hook]:
    """Hooks for one layer: q/k/v of all heads from one product (computed at the first port hook), the MLP
    (``drop``: the weights on the run's device and on the CPU)."""
    hooks: list[Hook] = []
    on_device, on_cpu = drop
    m, s = on_device.shape[0], slots.n_attn_sources

    def by_port(w: torch.Tensor) -> torch.Tensor:
        return w[:, slots.attn_start:slots.mlp_start].view(m, n_heads, 3, s).transpose(1, 2).reshape(m, 3 * n_heads, s)

    if bool(on_cpu[:, slots.attn_start:slots.mlp_start].any()):
        fill = correction(delta, by_port(on_device), by_port(on_cpu), grad, parts=len(PORTS))
        cache: dict[int, torch.Tensor] = {}

        def port_hook(i: int) -> Callable[..., torch.Tensor]:
            def hook(x: torch.Tensor, hook: object) -> torch.Tensor:
                if not cache:
                    cache.update(enumerate(fill(x)))
                return _add_to_fork(x, cache.pop(i))  # dropped once read: not held to the run's end
            return hook
        hooks += [(input_hook(slots.layer, p), port_hook(i)) for i, p in enumerate(PORTS)]
    mlp = slice(slots.mlp_start, slots.mlp_start + slots.n_mlp_sources)
    if bool(on_cpu[:, mlp].any()):
        hooks.append((input_hook(slots.layer, "mlp"), _add_resid(delta, on_device[:, mlp], on_cpu[:, mlp], grad)))
    return hooks


def _add_to_fork(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + y`` written into ``x``, a head port's input ``[m*b, p, h, d]``, for ``y`` ``[m, h, b, p, d]`` read
    through a permuted view. In place because the bridge forks each port's input afresh from the residual stream
    (a fresh tensor of that size costs its page faults on a CPU); the MLP's and the logits' inputs are the residual
    stream itself and are added to out of place."""
    m = y.shape[0]
    if m == 1:  # x itself, not a view of it: a view's in-place add would copy the whole gradient in the backward
        return x.add_(hook_major(y, x))
    x.view(m, x.shape[0] // m, *x.shape[1:]).add_(y.permute(0, 2, 3, 1, 4))
    return x


def _add_resid(delta: Deltas, w: torch.Tensor, on_cpu: torch.Tensor, grad: bool) -> Callable[..., torch.Tensor]:
    """Hook adding ``sum_s w[m, s] * delta[m, s]`` to a residual input ``[m*b, p, d]``."""
    fill = correction(delta, w[:, None], on_cpu[:, None], grad)

    def hook(x: torch.Tensor, hook: object) -> torch.Tensor:
        (y,) = fill(x)
        return x + hook_major(y, x)
    return hook
