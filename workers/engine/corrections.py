"""What a masked run adds to each destination's input: weighted sums of its sources' deltas.

As sources fire, a masked run records ``delta[m, s] = reference_s - current_s`` for every mask ``m``; a
destination whose incoming edges have weights ``w[m, s]`` (1 - keep: 1 ablated, 0 kept, fractions for learned
masks) gets ``sum_s w[m, s] delta[m, s]`` added to its input. Without gradients each mask's sums for a destination
group are taken in the cheaper of two equal forms, chosen from that mask alone before the run, so that a mask's
result does not depend on the masks that run beside it from the same start layer (ACDC's equality with its
sequential version rests on it):

- dense: one batched product over every source (rows that mix dropped and kept edges throughout);
- per-row sums (``Bags``): each row sums only the sources on its smaller side, read in place (no gathered
  copy): the sources with a dropped edge, or, when it keeps fewer, ``sum_s delta[m, s] - sum_s (1 - w[m, s])
  delta[m, s]`` over the sources with a kept edge, the first sum a running total (circuits that keep almost
  everything or few edges: ACDC's trials, the curves' budgets, and one-row destinations at any budget).

With gradients on, the product is an autograd function over the same buffer, which saves no copy of it. Sums of
several rows (a layer's q/k/v), and in a backward pass their gradient, are written into one buffer of the engine's
``Scratch``, reused layer after layer and run after run: their readers are done with them before the next layer's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DENSE_ROW_COST = 0.15
"""a dense product's cost per destination row and source, in reads of one source's deltas: a product of many rows
runs compute-bound (27 rows over SmolLM2-sized deltas on a 2-core CPU: about 0.15 reads per row and source), one of
few rows reads every source at least once; per-row sums cost one read per source summed"""


@dataclass(frozen=True)
class Bags:
    """One mask's per-row sums over a source range (the shared prefix, or the run's own buffer): each row's
    source indices in ``indices`` from ``offsets[row]``, each with its weight."""

    indices: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor

    def sums(self, table: torch.Tensor) -> torch.Tensor:
        """``[r, b * p * d]``: each row's weighted sum of the rows of ``table`` ``[sources, b * p * d]``."""
        return F.embedding_bag(self.indices, table, self.offsets, mode="sum",
                               per_sample_weights=self.weights.to(table.dtype))


@dataclass(frozen=True)
class RowSums:
    """One mask's sums as per-row sums: over the prefix's sources and the buffer's, plus the running total in the
    rows that take the complement form (``complement``: their indices, or ``None`` where none does)."""

    prefix: Bags | None
    own: Bags | None
    complement: torch.Tensor | None


@dataclass(frozen=True)
class Product:
    """How one destination group's sum is taken, mask by mask: the masks with per-row sums, and whether any mask
    takes the dense product."""

    sparse: tuple[tuple[int, RowSums], ...]
    dense: bool

    @property
    def complement(self) -> bool:
        """Whether some mask needs the running total."""
        return any(rows.complement is not None for _, rows in self.sparse)


def plan(w: torch.Tensor, device: torch.device, skipped: int) -> Product:
    """The product of each mask of the weights ``w`` ``[m, r, n]`` (on the CPU) over ``skipped`` prefix sources and
    the rest."""
    r, n = w.shape[1:]
    dropped, kept = w != 0, w != 1
    complement = kept.sum(2) < dropped.sum(2)
    side = torch.where(complement[:, :, None], kept, dropped)
    bag_cost = (side.sum((1, 2)) + complement.sum(1)).tolist()
    dense_cost = n * max(1.0, DENSE_ROW_COST * r)
    sparse, dense = [], False
    for i, cost in enumerate(bag_cost):
        if cost > dense_cost:
            dense = True
            continue
        signed = torch.where(complement[i, :, None], w[i] - 1, w[i])
        rows = RowSums(_bags(side[i, :, :skipped], signed[:, :skipped], device),
                       _bags(side[i, :, skipped:], signed[:, skipped:], device),
                       complement[i].nonzero().squeeze(1).to(device) if bool(complement[i].any()) else None)
        sparse.append((i, rows))
    return Product(tuple(sparse), dense)


def _bags(side: torch.Tensor, weights: torch.Tensor, device: torch.device) -> Bags | None:
    """Per-row sums over the sources where ``side`` ``[r, c]`` is set, with ``weights`` ``[r, c]`` (``None``: no
    row sums anything)."""
    rows, cols = side.nonzero(as_tuple=True)
    if not len(rows):
        return None
    offsets = torch.zeros(side.shape[0], dtype=torch.long)
    offsets[1:] = side.sum(1).cumsum(0)[:-1]
    return Bags(cols.to(device), offsets.to(device), weights[rows, cols].to(device))


class Scratch:
    """Buffers an engine's masked runs reuse: a fresh buffer of hundreds of MB is mapped anew and costs a page fault
    per 4 KiB on first touch (0.3 s for the deltas of GPT-2 small at batch 32 x 16 on a CPU), a reused one nothing.
    Each ``take`` hands a name's buffer out afresh; ``check`` tells its holder whether a later run has taken it since
    (a differentiable run holds its buffers until its backward pass)."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._takes: dict[str, int] = {}

    def take(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The buffer ``name`` of ``shape`` (dtype and device of ``like``, contents undefined) and this take's
        number."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != like.dtype or buffer.device != like.device:
            self._buffers.pop(name, None)  # the old one freed before the new one is made
            buffer = self._buffers[name] = like.new_empty(shape)
        self._takes[name] = self._takes.get(name, 0) + 1
        return buffer, self._takes[name]

    def check(self, name: str, take: int) -> None:
        """Raise when a later run has taken the buffer ``name`` since its take ``take``."""
        if self._takes.get(name) != take:
            raise RuntimeError(f"a later masked run of the same engine reused the {name} buffer before this run's "
                               "backward pass: run each differentiable masked run's backward before the next run")


class Deltas:
    """``reference - current`` of every source ``[m, source, b, p, d]``, filled as sources fire.

    One preallocated buffer written in place, outside autograd, after an optional ``prefix`` ``[skipped, b, p, d]``
    shared by every mask (the deltas of the sources that a run starting at a later layer does not compute); with
    ``totals`` on, a running sum over the sources recorded so far, per mask, for the complement form. With
    gradients on, each source group's current output is linked to the sums that read it by an empty token
    tensor, and the gradient the sums send to its deltas is accumulated in its sink (one buffer, whatever the
    number of sums), then handed to the source when the backward pass reaches it. Nothing in the graph refers
    back to this object (a reference cycle through the graph would keep every step's buffers until a collection).
    """

    def __init__(self, m: int, n_sources: int, prefix: torch.Tensor | None = None,
                 prefix_total: torch.Tensor | None = None, scratch: Scratch | None = None):
        self.m, self.n_sources, self.prefix, self.prefix_total = m, n_sources, prefix, prefix_total
        self.skipped = 0 if prefix is None else prefix.shape[0]
        self.recorded = self.skipped
        self.scratch = scratch or Scratch()
        self.buffer: torch.Tensor | None = None
        self.take = 0
        self.tokens: list[tuple[slice, torch.Tensor]] = []
        self.sink = _Sink(self.scratch)
        self.totals = False
        self._running: torch.Tensor | None = None

    def record(self, sl: slice, reference: torch.Tensor, current: torch.Tensor) -> None:
        if self.buffer is None:
            shape = (self.m, self.n_sources - self.skipped, *current.shape[2:])
            self.buffer, self.take = self.scratch.take("delta", shape, current)
        group = self.buffer[:, sl.start - self.skipped:sl.stop - self.skipped]
        torch.sub(reference, current.detach(), out=group)
        self.recorded = sl.stop
        if torch.is_grad_enabled():
            if current.requires_grad:
                self.tokens.append((sl, _Token.apply(current, self.sink, sl)))
        elif self.totals:
            # Summed source group by source group, whatever the masks beside: a mask's total is its own.
            self._running = self._start_total(group) + group.sum(1) if self._running is None else \
                self._running.add_(group.sum(1))

    def _start_total(self, like: torch.Tensor) -> torch.Tensor:
        shape = (self.m, *like.shape[2:])
        if self.prefix_total is None:
            return like.new_zeros(shape)
        return self.prefix_total.expand(shape).clone()

    def total(self, n: int) -> torch.Tensor:
        """``sum_s delta[m, s]`` over the first ``n`` sources ``[m, b, p, d]``."""
        if self._running is None:  # nothing computed yet: the prefix alone
            assert self.prefix_total is not None
            return self.prefix_total.expand((self.m, *self.prefix_total.shape))
        running = self._running
        if self.recorded > n:
            assert self.buffer is not None
            return running - self.buffer[:, n - self.skipped:self.recorded - self.skipped].sum(1)
        return running

    def row_sums(self, i: int, rows: RowSums) -> torch.Tensor | None:
        """Mask ``i``'s per-row sums ``[r, b * p * d]`` of the prefix's and its own deltas, without the running
        total (``None``: no row sums any source)."""
        out = None
        if rows.prefix is not None:
            assert self.prefix is not None
            out = rows.prefix.sums(self.prefix.reshape(self.skipped, -1))
        if rows.own is not None:
            assert self.buffer is not None
            own = rows.own.sums(self.buffer[i].reshape(self.buffer.shape[1], -1))
            out = own if out is None else out.add_(own)
        return out

    @property
    def one(self) -> torch.Tensor:
        """One source's deltas ``[b, p, d]`` (the buffer's first, or the prefix's where the run computed none)."""
        return self.buffer[0, 0] if self.buffer is not None else self.prefix[0]  # type: ignore[index]

    def zeros(self, r: int) -> torch.Tensor:
        """``r`` rows of zeros, one mask's sums where no source is summed ``[r, b * p * d]``."""
        return self.one.new_zeros((r, self.one.numel()))

    def sums(self, r: int) -> torch.Tensor:
        """An output buffer ``[m, r, b * p * d]`` for sums of ``r`` rows (see ``_sums``)."""
        return _sums(self.scratch, self.m, r, self.one)

    def dense(self, w: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Every mask's full product into ``out`` ``[m, r, b * p * d]``: the rest as one batched product, the
        shared prefix added one mask at a time (so a mask's result does not depend on its batch)."""
        m, n = w.shape[0], w.shape[2]
        k = self.skipped
        if n > k:
            assert self.buffer is not None
            torch.matmul(w[:, :, k:n], self.buffer[:, :n - k].reshape(m, n - k, -1), out=out)
        else:
            out.zero_()
        if self.prefix is not None:
            prefix = self.prefix.reshape(k, -1)
            for i in range(m):
                out[i].addmm_(w[i, :, :k], prefix)
        return out


def _sums(scratch: Scratch, m: int, r: int, like: torch.Tensor) -> torch.Tensor:
    """A buffer ``[m, r, like.numel()]`` for sums of ``r`` rows or their gradient (contents undefined): the scratch's
    for several rows (a layer's q/k/v sums, read by their hooks before the next layer's are taken; in a backward
    pass, their gradient, read before the next sum's arrives), else fresh."""
    shape = (m, r, like.numel())
    return scratch.take("sums", shape, like)[0] if r > 1 else like.new_empty(shape)


def weighted(delta: Deltas, w: torch.Tensor, product: Product | None, parts: int = 1) -> tuple[torch.Tensor, ...]:
    """``sum_s w[m, r, s] * delta[m, s]`` as ``parts`` equal groups of rows, each ``[m, r / parts, b, p, d]``, each
    mask in the form ``product`` chose for it (``None`` with gradients on)."""
    m, r, n = w.shape
    if product is None:
        return WeightedSum.apply(w, delta, n, parts, *(t for sl, t in delta.tokens if sl.start < n))
    shape = delta.one.shape
    total = delta.total(n).reshape(m, -1) if product.complement else None
    if m == 1 and not product.dense:
        out = _row_form(delta, *product.sparse[0], total, r)
    else:
        out = delta.sums(r)
        if product.dense:
            delta.dense(w, out)
        for i, rows in product.sparse:
            out[i] = _row_form(delta, i, rows, total, r)
    return out.view(m, parts, r // parts, *shape).unbind(1)


def _row_form(delta: Deltas, i: int, rows: RowSums, total: torch.Tensor | None, r: int) -> torch.Tensor:
    """Mask ``i``'s ``r`` rows from per-row sums, the running total ``[m, b * p * d]`` added to the complement rows."""
    sums, complement = delta.row_sums(i, rows), rows.complement
    if complement is None:
        return sums if sums is not None else delta.zeros(r)
    assert total is not None
    if len(complement) == r:
        everywhere = total[i].expand(r, -1)
        return everywhere if sums is None else sums.add_(everywhere)
    base = sums if sums is not None else delta.zeros(r)
    return base.index_add_(0, complement, total[i].expand(len(complement), -1))


class _Sink:
    """The gradient of the deltas, accumulated over the sums' backward passes ``[m, source, b, p, d]`` (a buffer
    of the run's scratch)."""

    def __init__(self, scratch: Scratch) -> None:
        self.scratch, self.take = scratch, 0
        self.grad: torch.Tensor | None = None

    def add(self, w: torch.Tensor, g: torch.Tensor, like: torch.Tensor) -> None:
        """Add a sum's gradient to its ``n`` sources' deltas, ``w^T g`` for weights ``w`` ``[m, r, n]`` and output
        gradient ``g`` ``[m, r, b*p*d]``, in place (``like``: the delta buffer)."""
        if self.grad is None:
            self.grad, self.take = self.scratch.take("gradient", tuple(like.shape), like)
            self.grad.zero_()
        self.scratch.check("gradient", self.take)
        n = w.shape[2]
        for i, (wi, gi) in enumerate(zip(w, g, strict=True)):  # mask by mask: a 2-D product runs faster on a CPU
            self.grad[i, :n].view(n, -1).addmm_(wi.t(), gi)


class _Token(torch.autograd.Function):
    """An empty tensor standing for one source group's deltas in the graph: the sums that read the group take it
    as an input, so the backward pass reaches the group's output after every such sum, and hands it the gradient
    they accumulated for its deltas (negated: a delta is reference - current)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, current: torch.Tensor, sink: _Sink,
                sl: slice) -> torch.Tensor:
        ctx.sink, ctx.sl = sink, sl  # type: ignore[attr-defined]
        return current.new_empty(0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, _: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        sink, sl = ctx.sink, ctx.sl  # type: ignore[attr-defined]
        assert sink.grad is not None
        sink.scratch.check("gradient", sink.take)
        grad = -sink.grad[:, sl]
        sink.grad[:, sl] = 0  # taken: a second backward pass over the same graph accumulates afresh
        return grad, None, None


class WeightedSum(torch.autograd.Function):
    """``weighted`` with gradients: the product over the first ``n`` sources of the buffer (no copy of it is
    saved: the run writes each source's deltas once, before any sum reads them), handed out as ``parts`` views of
    its buffer (``_sums``); the backward gathers the parts' gradients into the same buffer, accumulates the deltas'
    gradient in the run's sink and gives the tokens empty gradients."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, w: torch.Tensor, delta: Deltas, n: int, parts: int,
                *tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        assert delta.buffer is not None
        ctx.save_for_backward(w)
        ctx.buffer, ctx.sink, ctx.n = delta.buffer, delta.sink, n  # type: ignore[attr-defined]
        ctx.take = delta.scratch, delta.take  # type: ignore[attr-defined]
        m, r = w.shape[:2]
        out = torch.matmul(w, delta.buffer[:, :n].reshape(m, n, -1), out=delta.sums(r))
        return out.view(m, parts, r // parts, *delta.buffer.shape[2:]).unbind(1)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (w,) = ctx.saved_tensors  # type: ignore[attr-defined]
        buffer, n, (scratch, take) = ctx.buffer, ctx.n, ctx.take  # type: ignore[attr-defined]
        scratch.check("delta", take)
        m, r = w.shape[:2]
        g = _sums(scratch, m, r, buffer[0, 0])
        for part, grad in zip(g.view(m, len(grads), r // len(grads), -1).unbind(1), grads, strict=True):
            part.view(grad.shape).copy_(grad)  # the parts' gradients arrive in their readers' layouts
        d = buffer[:, :n].reshape(m, n, -1)
        grad_w = torch.matmul(g, d.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        ctx.sink.add(w, g, buffer)  # type: ignore[attr-defined]
        n_tokens = len(ctx.needs_input_grad) - 4
        return (grad_w, None, None, None, *(g.new_empty(0) for _ in range(n_tokens)))


Correction = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
"""the weighted sums of one destination group, computed when its first hook fires"""


def correction(delta: Deltas, w: torch.Tensor, on_cpu: torch.Tensor, grad: bool, parts: int = 1) -> Correction:
    """The sum for weights ``w`` ``[m, r, n]`` (``on_cpu``: the same on the CPU) in ``parts`` groups of rows, its
    per-mask forms planned now (without gradients)."""
    product = None if grad else plan(on_cpu, w.device, delta.skipped)
    if product is not None and product.complement:
        delta.totals = True
    return lambda _: weighted(delta, w, product, parts)
