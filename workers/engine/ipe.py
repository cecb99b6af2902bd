"""IPE, Isolating Path Effects: whole paths from the embeddings to the logits, searched backwards.

A path is a chain of edges from its first node to the logits. Its contribution: the first node
emits a message (clean minus ablated output: zero ablation emits the clean output, resample the
clean-minus-counterfactual difference) along its first edge only; each node on the path reruns its
norm and module with the message arriving on its path input (attention keeps the clean pattern for
a value message and recomputes it for a query or key message), every other input clean, and the
difference of its output is the next message; the last one is removed from the final residual and
the metric read. On the fast engine that is one masked run: the path's edges kept, every other
edge frozen at its source's clean output, the first node patched. Contributions are fractions of
``m(full) - m(empty)``, positive where the path supports the answer.

A partial path (first node ``s``) is continued by every edge into ``s``'s inputs. ``exact`` scores
each continuation by its own run; ``approx`` (seed 001) scores them all at once from the gradient
of the partial path's metric with respect to ``s``'s inputs, ``c(u -> P) ~ grad . (clean_u -
ablated_u) / span`` (one backward pass per partial path), the gradient optionally averaged over
``steps`` points on the way from ``s``'s clean input to its fully ablated one (integrated
gradients: saturated attention and norms flatten the gradient at the clean input). Strategies:
``bfs`` extends every partial path passing the threshold depth by depth (the ``width`` best per
depth), the approximated variant re-checking exactly the ``recheck`` best continuations of each;
``best-first`` extends the partial or complete path of largest |contribution| first (a complete
path is reported when it reaches the top of the queue, so paths come out largest first); its
approximated variant re-checks the ``recheck`` best estimates of each expansion at once and queues
the rest with their derivative scores, re-checked exactly only when they reach its top (``recheck``
together), so a path is extended or reported only on its exact contribution. With ``optimism`` q >
0, an estimate is queued (and thresholded) scaled up by the q-quantile of |exact| / |estimate| over
the re-checks so far: estimates that tend to fall short are re-checked sooner, trading evaluations
for agreement with the exact search.
Both stop at ``max_paths`` complete paths or the time budget.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from circat.service.graph import ModelGraph
from circat.service.jobs.spec import PathSearch
from circat.service.types import Port, Search
from circat.workers.engine.evaluate import Baselines, masks_per_run
from circat.workers.engine.patching import LOGITS_INPUT, PatchingEngine, input_hook, last_logits
from circat.workers.engine.path_patching import input_slots, passing

ALL_PORTS = ("q", "k", "v", "mlp")
PartialPath = tuple[int, ...]
"""edge indices from the path's first node to the logits; empty: the logits alone"""


@dataclass(frozen=True)
class FoundPath:
    """A complete path (``input`` to ``logits``), its contribution, and the model evaluations the
    search had spent when it reported the path."""

    edges: tuple[int, ...]
    contribution: float
    evaluations: int

    def names(self, graph: ModelGraph) -> list[str]:
        return [graph.edge_name(e) for e in self.edges]


@dataclass
class Counts:
    """Model evaluations spent: one per path run forward, one per partial path differentiated."""

    forward: int = 0
    backward: int = 0
    expanded: int = 0

    @property
    def total(self) -> int:
        return self.forward + self.backward


@dataclass(frozen=True)
class IpeResult:
    """The complete paths found (largest |contribution| first), what they cost, and why the search ended."""

    paths: tuple[FoundPath, ...]
    counts: Counts
    stopped: str

    def evaluations_for(self, k: int) -> int:
        """Model evaluations the search had spent when it had reported ``k`` paths (all, if fewer)."""
        spent = sorted(p.evaluations for p in self.paths)
        return spent[k - 1] if 0 < k <= len(spent) else self.counts.total


@dataclass
class PathScorer:
    """Exact and derivative-based path contributions on one engine."""

    engine: PatchingEngine
    baselines: Baselines
    steps: int = 1
    """derivative points per partial path: the gradient at the clean input (1), or averaged over
    ``j / steps`` of the way to the first node's fully ablated input, ``j < steps``"""
    counts: Counts = field(default_factory=Counts)

    @property
    def graph(self) -> ModelGraph:
        return self.engine.layout.graph

    @property
    def span(self) -> float:
        return self.baselines.full - self.baselines.empty

    def first_node(self, path: PartialPath) -> int:
        return int(self.graph.edge_src[path[0]]) if path else self.graph.n_nodes - 1

    def slots(self, path: PartialPath) -> list[int]:
        """The destination slots a path can be continued into: its first node's inputs (the logits' when empty)."""
        g = self.graph
        return [g.slot_of[("logits", Port.LOGITS)]] if not path else input_slots(g, self.first_node(path), ALL_PORTS)

    def continuations(self, path: PartialPath) -> list[PartialPath]:
        """Every one-edge extension of ``path`` at its first node (none once it starts at ``input``)."""
        g = self.graph
        return [(int(g.slot_start[slot]) + u, *path)
                for slot in self.slots(path) for u in range(g.dests[slot].n_sources)]

    def _masks(self, paths: Sequence[PartialPath]) -> tuple[torch.Tensor, torch.Tensor]:
        keep = torch.zeros((len(paths), self.graph.n_edges))
        first = torch.zeros((len(paths), self.engine.n_sources))
        for i, p in enumerate(paths):
            keep[i, list(p)] = 1
            if p:
                first[i, self.first_node(p)] = 1
        return keep, first

    def exact(self, paths: Sequence[PartialPath]) -> np.ndarray:
        """Contribution of each path: one masked run each, batched within the memory budget."""
        out = []
        chunk = masks_per_run(self.engine)
        for start in range(0, len(paths), chunk):
            keep, first = self._masks(paths[start:start + chunk])
            final = self.engine.run_edges(keep, self.engine.clean_out, first)
            out.append(self.engine.metric_of(final).double().cpu())
        self.counts.forward += len(paths)
        metric = torch.cat(out).numpy() if out else np.zeros(0)
        return (self.baselines.full - metric) / self.span

    def approx(self, paths: Sequence[PartialPath]) -> list[tuple[list[PartialPath], np.ndarray]]:
        """For each partial path, its continuations and their derivative-based contributions."""
        out = []
        chunk = max(1, masks_per_run(self.engine) // (2 * self.steps))
        for start in range(0, len(paths), chunk):
            out += self._approx(paths[start:start + chunk])
        return out

    def _approx(self, paths: Sequence[PartialPath]) -> list[tuple[list[PartialPath], np.ndarray]]:
        engine, k, b = self.engine, self.steps, len(self.engine.batch)
        copies = [p for p in paths for _ in range(k)]
        keep, _ = self._masks(copies)
        grads: dict[str, torch.Tensor] = {}
        messages = self._messages()
        shifts = self._shifts(paths, messages) if k > 1 else {}
        names = {_slot_hook(self.graph, slot) for p in paths for slot in self.slots(p)}
        with torch.enable_grad():
            hooks = engine.edge_hooks(keep, engine.clean_out)
            hooks += [(n, _capture(n, grads, shifts.get(n))) for n in sorted(names)]
            final = last_logits(engine.model, engine.batch.clean.repeat(len(copies), 1), hooks,
                                engine.batch.lengths.repeat(len(copies)), rows=b)
            engine.metric_of(final.view(len(copies), b, -1)).sum().backward()
        self.counts.backward += len(copies)
        msg = messages.reshape(engine.n_sources, -1)
        results = []
        for i, p in enumerate(paths):
            scores = []
            for slot in self.slots(p):
                dest = self.graph.dests[slot]
                g = grads[_slot_hook(self.graph, slot)]
                g = g.view(len(paths), k, b, *g.shape[1:])[i].mean(0)
                g = g[:, :, dest.node.head] if g.dim() == 4 else g  # a head's slice of a per-head input
                scores.append((msg[:dest.n_sources] @ g.reshape(-1)).double().cpu())
            results.append((self.continuations(p), torch.cat(scores).numpy() / self.span))
        return results

    def _messages(self) -> torch.Tensor:
        """Every source's message ``clean - ablated`` ``[source, batch, pos, d_model]``."""
        engine = self.engine
        return (engine.clean_out - engine.ablated).expand_as(engine.clean_out)

    def _shifts(self, paths: Sequence[PartialPath], msg: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per input hook, what each copy subtracts: ``j / steps`` of the first node's slot's whole
        message ``msg`` (every source into it ablated) on copy ``j`` of each partial path, 0 elsewhere."""
        k, b, n_heads = self.steps, len(self.engine.batch), self.engine.model.shape.n_heads
        alphas = torch.arange(k, device=msg.device, dtype=msg.dtype).view(k, 1, 1, 1) / k
        wholes: dict[int, torch.Tensor] = {}
        shifts: dict[str, torch.Tensor] = {}
        for i, p in enumerate(paths):
            for slot in self.slots(p):
                dest, name = self.graph.dests[slot], _slot_hook(self.graph, slot)
                per_head = dest.node.head is not None
                if name not in shifts:
                    shape = (len(paths), k, b, msg.shape[2], *((n_heads,) if per_head else ()), msg.shape[3])
                    shifts[name] = msg.new_zeros(shape)
                if dest.n_sources not in wholes:  # a head's three ports share their sources
                    wholes[dest.n_sources] = alphas * msg[:dest.n_sources].sum(0)
                whole = wholes[dest.n_sources]
                if per_head:
                    shifts[name][i, :, :, :, dest.node.head] = whole
                else:
                    shifts[name][i] = whole
        return {name: s.flatten(0, 2) for name, s in shifts.items()}


def _slot_hook(graph: ModelGraph, slot: int) -> str:
    """The hook name of a destination slot's input."""
    dest = graph.dests[slot]
    if dest.port is Port.LOGITS:
        return LOGITS_INPUT
    assert dest.node.layer is not None
    return input_hook(dest.node.layer, dest.port.value)


def _capture(name: str, grads: dict[str, torch.Tensor], shift: torch.Tensor | None) -> Callable[..., torch.Tensor]:
    """A hook keeping the metric's gradient at this input (the graph above it left whole), taken
    at the input less ``shift`` when given."""
    def hook(x: torch.Tensor, hook: object) -> torch.Tensor:
        mine = x if x.requires_grad else x.detach().requires_grad_(True)
        mine = mine.clone() if shift is None else mine - shift
        mine.register_hook(lambda g: grads.__setitem__(name, g.detach()))
        return mine
    return hook


def search_paths(scorer: PathScorer, search: PathSearch, approximate: bool,
                 tick: Callable[[int, str], None] = lambda _n, _m: None) -> IpeResult:
    """Find complete paths by ``search.search`` (exact or derivative-scored continuations);
    ``tick(paths found, message)`` after each step."""
    strategy = _bfs if search.search is Search.BFS else _best_first
    found, stopped = strategy(scorer, search, approximate, tick)
    paths = sorted(found, key=lambda p: (-abs(p.contribution), p.edges))[:search.max_paths]
    return IpeResult(tuple(paths), scorer.counts, stopped)


def _continue(scorer: PathScorer, partials: list[PartialPath], search: PathSearch,
              approximate: bool) -> tuple[list[PartialPath], np.ndarray]:
    """The continuations of ``partials`` worth keeping track of, with their exact contributions."""
    scorer.counts.expanded += len(partials)
    if not approximate:
        conts = [c for p in partials for c in scorer.continuations(p)]
        return conts, scorer.exact(conts)
    chosen = []
    for conts, est in scorer.approx(partials):
        best = np.argsort(-np.abs(est), kind="stable")[:search.recheck]
        chosen += [conts[i] for i in best]
    return chosen, scorer.exact(chosen)


class _Clock:
    def __init__(self, search: PathSearch):
        self.deadline = None if search.time_budget_s is None else time.monotonic() + search.time_budget_s

    @property
    def out(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


def _bfs(scorer: PathScorer, search: PathSearch, approximate: bool,
         tick: Callable[[int, str], None]) -> tuple[list[FoundPath], str]:
    found: list[FoundPath] = []
    frontier: list[PartialPath] = [()]
    clock = _Clock(search)
    while frontier:
        if clock.out:
            return found, "time budget"
        conts, c = _continue(scorer, frontier, search, approximate)
        ok = passing(c, search)
        complete = np.array([scorer.first_node(p) == 0 for p in conts], dtype=bool)
        found += [FoundPath(conts[i], float(c[i]), scorer.counts.total) for i in np.flatnonzero(ok & complete)]
        rest = np.flatnonzero(ok & ~complete)
        rest = rest[np.argsort(-np.abs(c[rest]), kind="stable")][:search.width]
        frontier = [conts[i] for i in rest]
        tick(len(found), f"{len(found)} paths, {len(frontier)} partial, {scorer.counts.total} evaluations")
        if len(found) >= search.max_paths:
            return found, "max paths"
    return found, "exhausted"


def _best_first(scorer: PathScorer, search: PathSearch, approximate: bool,
                tick: Callable[[int, str], None]) -> tuple[list[FoundPath], str]:
    queue = _Queue()
    queue.push((), -np.inf, exact=True)
    calibration = _Calibration(search.optimism)
    found: list[FoundPath] = []
    largest = 0.0
    clock = _Clock(search)
    while queue:
        if clock.out:
            return found, "time budget"
        path, contribution, exact = queue.pop()
        if exact and path and scorer.first_node(path) == 0:  # the largest left is complete: report it
            found.append(FoundPath(path, contribution, scorer.counts.total))
            if len(found) >= search.max_paths:
                return found, "max paths"
            continue
        if not exact:  # an estimate at the top: re-check it, with the next estimates, exactly
            popped = [(path, contribution), *queue.pop_estimated(search.recheck - 1)]
            conts = [p for p, _ in popped]
            c = scorer.exact(conts)
            calibration.observe(np.array([e for _, e in popped]), c)
        elif approximate:  # extend by estimates; the best re-checked at once, the rest queued
            conts, c = _estimate(scorer, path, search, largest, queue, calibration)
        else:
            conts, c = _continue(scorer, [path], search, False)
        largest = max(largest, float(np.abs(c).max(initial=0.0)))
        for i in np.flatnonzero(passing(c, search, largest)):
            queue.push(conts[i], float(c[i]), exact=True)
        tick(len(found), f"{len(found)} paths, {len(queue)} queued, {scorer.counts.total} evaluations")
    return found, "exhausted"


def _estimate(scorer: PathScorer, partial: PartialPath, search: PathSearch, largest: float,
              queue: _Queue, calibration: _Calibration) -> tuple[list[PartialPath], np.ndarray]:
    """Estimate every continuation of ``partial``: the ``recheck`` best passing the threshold are
    re-checked exactly and returned with their contributions, the others queued as estimates."""
    scorer.counts.expanded += 1
    (conts, est), = scorer.approx([partial])
    factor = calibration.factor
    ok = np.flatnonzero(passing(est * factor, search, largest))
    ok = ok[np.argsort(-np.abs(est[ok]), kind="stable")]
    for i in ok[search.recheck:]:
        queue.push(conts[i], float(est[i]), exact=False, priority=abs(float(est[i])) * factor)
    best = ok[:search.recheck]
    c = scorer.exact([conts[i] for i in best])
    calibration.observe(est[best], c)
    return [conts[i] for i in best], c


class _Calibration:
    """How far exact contributions exceed their estimates: the ``quantile`` of |exact| / |estimate| seen."""

    def __init__(self, quantile: float):
        self.quantile = quantile
        self.ratios: list[float] = []

    def observe(self, estimates: np.ndarray, exact: np.ndarray) -> None:
        keep = np.abs(estimates) > 1e-9
        self.ratios += (np.abs(exact[keep]) / np.abs(estimates[keep])).tolist()

    @property
    def factor(self) -> float:
        if self.quantile <= 0 or len(self.ratios) < 8:
            return 1.0
        return max(1.0, float(np.quantile(self.ratios, self.quantile)))


class _Queue:
    """Paths by largest |contribution| first, each contribution exact or derivative-estimated."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, PartialPath, float, bool]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, path: PartialPath, contribution: float, exact: bool, priority: float | None = None) -> None:
        key = abs(contribution) if priority is None else priority
        heapq.heappush(self._heap, (-key, next(self._order), path, contribution, exact))

    def pop(self) -> tuple[PartialPath, float, bool]:
        _, _, path, contribution, exact = heapq.heappop(self._heap)
        return path, contribution, exact

    def pop_estimated(self, at_most: int) -> list[tuple[PartialPath, float]]:
        """Up to ``at_most`` more estimated paths and their estimates from the top, up to the first exact one."""
        out = []
        while self._heap and len(out) < at_most and not self._heap[0][4]:
            _, _, path, contribution, _ = heapq.heappop(self._heap)
            out.append((path, contribution))
        return out


def path_circuit(graph: ModelGraph, paths: Sequence[FoundPath]) -> tuple[np.ndarray, np.ndarray]:
    """The union of the paths' edges, each scored by the summed contribution of the paths through it."""
    mask = np.zeros(graph.n_edges, dtype=bool)
    scores = np.zeros(graph.n_edges)
    for p in paths:
        idx = list(p.edges)
        mask[idx] = True
        scores[idx] += p.contribution
    return mask, np.where(mask, scores, np.nan)
