"""What a masked run adds to each destination's input: weighted sums of its sources' deltas.

As sources fire, a masked run records ``delta[m, s] = reference_s - current_s`` for every mask ``m``; a
destination whose incoming edges have weights ``w[m, s]`` (1 - keep: 1 ablated, 0 kept, fractions for learned
masks) gets ``sum_s w[m, s] delta[m, s]`` added to its input. Without gradients each mask's sum is taken in the
cheapest of three equal forms, chosen from that mask alone before the run, so that a mask's result does not
depend on the masks that run beside it from the same start layer (ACDC's equality with its sequential version
rests on it):

- dense: a batched product over every source (many sources have both dropped and kept edges);
- dropped: a product over the sources with a dropped edge only (a circuit that keeps almost everything);
- complement: ``sum_s delta[m, s] - sum_s (1 - w[m, s]) delta[m, s]``, the second product over the sources with
  a kept edge only and the first sum a running total (a circuit that keeps few edges: ACDC's later trials, the
  curves' small budgets).

With gradients on, the product is an autograd function over the same buffer, which saves no copy of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

SPARSE_SHARE = 0.5
"""a mask takes a one-sided product when it needs at most this share of its destinations' sources"""


@dataclass(frozen=True)
class Product:
    """How one destination group's sum is taken, mask by mask: the masks with a one-sided product (mask, whether
    it is the complement form, the sources it reads ``[c]``), and whether any mask takes the dense product."""

    sparse: tuple[tuple[int, bool, torch.Tensor], ...]
    dense: bool

    @property
    def complement(self) -> bool:
        """Whether some mask needs the running total."""
        return any(c for _, c, _ in self.sparse)


def plan(w: torch.Tensor, device: torch.device) -> Product:
    """The product of each mask of the weights ``w`` ``[m, r, n]`` (on the CPU)."""
    n = w.shape[2]
    dropped, kept = (w != 0).any(1), (w != 1).any(1)
    n_dropped, n_kept = dropped.sum(1).tolist(), kept.sum(1).tolist()
    sparse, dense = [], False
    for i, (nd, nk) in enumerate(zip(n_dropped, n_kept, strict=True)):
        if min(nd, nk) > SPARSE_SHARE * n:
            dense = True
            continue
        complement = nk < nd
        cols = (kept[i] if complement else dropped[i]).nonzero().squeeze(1).to(device)
        sparse.append((i, complement, cols))
    return Product(tuple(sparse), dense)


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
                 prefix_total: torch.Tensor | None = None):
        self.m, self.n_sources, self.prefix, self.prefix_total = m, n_sources, prefix, prefix_total
        self.skipped = 0 if prefix is None else prefix.shape[0]
        self.recorded = self.skipped
        self.buffer: torch.Tensor | None = None
        self.tokens: list[tuple[slice, torch.Tensor]] = []
        self.sink = _Sink()
        self.totals = False
        self._running: torch.Tensor | None = None

    def record(self, sl: slice, reference: torch.Tensor, current: torch.Tensor) -> None:
        if self.buffer is None:
            self.buffer = current.new_empty((self.m, self.n_sources - self.skipped, *current.shape[2:]))
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

    def rows(self, i: int, cols: torch.Tensor) -> torch.Tensor:
        """Mask ``i``'s deltas of the sources ``cols`` (ascending) as rows ``[len(cols), b * p * d]``."""
        k = self.skipped
        split = int((cols < k).sum())
        parts = []
        if split:
            assert self.prefix is not None
            parts.append(self.prefix.reshape(k, -1).index_select(0, cols[:split]))
        if split < len(cols):
            assert self.buffer is not None
            parts.append(self.buffer[i].reshape(self.buffer.shape[1], -1).index_select(0, cols[split:] - k))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def dense(self, w: torch.Tensor) -> torch.Tensor:
        """Every mask's full product ``[m, r, b * p * d]``: the rest as one batched product, the shared prefix
        added one mask at a time (so a mask's result does not depend on its batch)."""
        m, r, n = w.shape
        k = self.skipped
        if n > k:
            assert self.buffer is not None
            out = torch.matmul(w[:, :, k:n], self.buffer[:, :n - k].reshape(m, n - k, -1))
        else:
            assert self.prefix is not None
            out = w.new_zeros((m, r, self.prefix[0].numel()))
        if self.prefix is not None:
            prefix = self.prefix.reshape(k, -1)
            for i in range(m):
                out[i].addmm_(w[i, :, :k], prefix)
        return out


def weighted(delta: Deltas, w: torch.Tensor, product: Product | None) -> torch.Tensor:
    """``sum_s w[m, r, s] * delta[m, s]`` -> ``[m, r, b, p, d]``, each mask in the form ``product`` chose for it
    (``None`` with gradients on)."""
    m, r, n = w.shape
    if product is None:
        return WeightedSum.apply(w, delta, n, *(t for sl, t in delta.tokens if sl.start < n))
    shape = delta.buffer.shape[2:] if delta.buffer is not None else delta.prefix.shape[1:]  # type: ignore[union-attr]
    out = delta.dense(w) if product.dense else w.new_empty((m, r, shape.numel()))
    total = delta.total(n).reshape(m, 1, -1) if product.complement else None
    for i, complement, cols in product.sparse:
        if complement:
            assert total is not None
            out[i] = total[i] if not len(cols) else total[i] - torch.matmul(1 - w[i][:, cols], delta.rows(i, cols))
        elif len(cols):
            torch.matmul(w[i][:, cols], delta.rows(i, cols), out=out[i])
        else:
            out[i].zero_()
    return out.view(m, r, *shape)


class _Sink:
    """The gradient of the deltas, accumulated over the sums' backward passes ``[m, source, b, p, d]``."""

    grad: torch.Tensor | None = None

    def add(self, w: torch.Tensor, g: torch.Tensor, like: torch.Tensor) -> None:
        """Add a sum's gradient to its ``n`` sources' deltas, ``w^T g`` for weights ``w`` ``[m, r, n]`` and output
        gradient ``g`` ``[m, r, b*p*d]``, in place (``like``: the delta buffer)."""
        if self.grad is None:
            self.grad = torch.zeros_like(like)
        m, n = w.shape[0], w.shape[2]
        self.grad[:, :n].view(m, n, -1).baddbmm_(w.transpose(1, 2), g)


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
        grad = -sink.grad[:, sl]
        sink.grad[:, sl] = 0  # taken: a second backward pass over the same graph accumulates afresh
        return grad, None, None


class WeightedSum(torch.autograd.Function):
    """``weighted`` with gradients: the product over the first ``n`` sources of the buffer (no copy of it is
    saved: the run writes each source's deltas once, before any sum reads them); the backward accumulates the
    deltas' gradient in the run's sink and gives the tokens empty gradients."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, w: torch.Tensor, delta: Deltas, n: int,
                *tokens: torch.Tensor) -> torch.Tensor:
        assert delta.buffer is not None
        ctx.save_for_backward(w)
        ctx.buffer, ctx.sink, ctx.n = delta.buffer, delta.sink, n  # type: ignore[attr-defined]
        m, r = w.shape[:2]
        return torch.matmul(w, delta.buffer[:, :n].reshape(m, n, -1)).view(m, r, *delta.buffer.shape[2:])

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (w,) = ctx.saved_tensors  # type: ignore[attr-defined]
        buffer, n = ctx.buffer, ctx.n  # type: ignore[attr-defined]
        m, r = w.shape[:2]
        d = buffer[:, :n].reshape(m, n, -1)
        g = g.reshape(m, r, -1)
        grad_w = torch.matmul(g, d.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        ctx.sink.add(w, g, buffer)  # type: ignore[attr-defined]
        n_tokens = len(ctx.needs_input_grad) - 3
        return (grad_w, None, None, *(g.new_empty(0) for _ in range(n_tokens)))


Correction = Callable[[torch.Tensor], torch.Tensor]
"""the weighted sum of one destination group, computed when its hook fires"""


def correction(delta: Deltas, w: torch.Tensor, on_cpu: torch.Tensor, grad: bool) -> Correction:
    """The sum for weights ``w`` ``[m, r, n]`` (``on_cpu``: the same on the CPU), its per-mask forms planned now
    (without gradients)."""
    product = None if grad else plan(on_cpu, w.device)
    if product is not None and product.complement:
        delta.totals = True
    return lambda _: weighted(delta, w, product)
