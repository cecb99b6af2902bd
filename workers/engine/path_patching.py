"""Path patching (Wang et al. 2022) and the iterative circuit build backwards from the logits.

The effect of a sender ``s`` on receiver inputs ``R`` through direct paths only is the change of
the metric when the edges ``s -> r`` (``r`` in ``R``) carry ``s``'s ablated output while every other
edge keeps its clean value, and everything after the receivers is recomputed: exactly the fast
engine's masked run with those edges dropped. All senders of a round run as one batch of masks.
Effects are fractions of the model's behaviour, ``(m(full) - m(patched)) / (m(full) - m(empty))``,
positive where the sender supports the answer.

The build: receivers start as the logits. Each round scores every sender feeding the current
receivers (jointly over them), keeps those whose |effect| passes the threshold (absolute, or a
fraction of the round's largest), then scores each edge from a kept sender to a receiver alone; an
edge joins the circuit when it passes the same threshold (a kept sender none of whose edges does
keeps its strongest one). The kept senders' inputs (the ports asked for) are the next receivers.
After each round the circuit is evaluated with every edge into the unexplored receivers kept (the
model below the frontier left clean), so the figure says how much of the behaviour the circuit
found so far carries; after the last round that is the circuit's own faithfulness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from circat.service.graph import ModelGraph
from circat.service.jobs.spec import PathSearch
from circat.service.types import NodeKind, Port
from circat.workers.engine.evaluate import EdgeEvaluator

PORTS_OF = {NodeKind.ATTENTION: (Port.Q, Port.K, Port.V), NodeKind.MLP: (Port.MLP,)}


@dataclass(frozen=True)
class Round:
    """One round of the build: its receivers, the senders kept, and what the circuit recovers."""

    receivers: tuple[str, ...]
    senders: tuple[str, ...]
    edges: int
    faithfulness: float


@dataclass(frozen=True)
class PathPatchingResult:
    """The edges found with their path-patching effects, each kept sender's effect, and the rounds."""

    edge_mask: np.ndarray
    edge_scores: np.ndarray
    node_scores: np.ndarray
    rounds: tuple[Round, ...]


def sender_masks(graph: ModelGraph, senders: np.ndarray, slots: list[int]) -> np.ndarray:
    """One keep-mask per sender: its edges into every receiver slot dropped, all else kept."""
    masks = np.ones((len(senders), graph.n_edges), dtype=bool)
    for slot in slots:
        n = graph.dests[slot].n_sources
        feeds = senders < n
        masks[np.flatnonzero(feeds), graph.slot_start[slot] + senders[feeds]] = False
    return masks


def effects(evaluator: EdgeEvaluator, masks: np.ndarray) -> np.ndarray:
    """Path-patching effect of each keep-mask: the share of the behaviour its dropped edges carry."""
    base = evaluator.baselines
    return (base.full - evaluator.metrics(masks)) / (base.full - base.empty)


def passing(values: np.ndarray, search: PathSearch, largest: float | None = None) -> np.ndarray:
    """Which |values| pass the threshold: ``min_effect``, or that fraction of ``largest`` when relative."""
    scale = (largest if largest is not None else float(np.abs(values).max(initial=0.0))) if search.relative else 1.0
    return np.abs(values) >= max(search.min_effect * scale, 1e-12)


def input_slots(graph: ModelGraph, node: int, ports: tuple[str, ...]) -> list[int]:
    """The slots of a node's inputs among ``ports`` (none for ``input``)."""
    n = graph.nodes[node]
    return [graph.slot_of[(n.name, p)] for p in PORTS_OF.get(n.kind, ()) if p.value in ports]


def path_patching(evaluator: EdgeEvaluator, search: PathSearch,
                  tick: Callable[[str], None] = lambda _: None) -> PathPatchingResult:
    """Build a circuit backwards from the logits by iterated path patching."""
    graph = evaluator.engine.layout.graph
    edge_mask = np.zeros(graph.n_edges, dtype=bool)
    edge_scores = np.full(graph.n_edges, np.nan)
    node_scores = np.full(graph.n_nodes, np.nan)
    receivers = [graph.slot_of[("logits", Port.LOGITS)]]
    expanded = {graph.n_nodes - 1}
    rounds = []
    while receivers:
        n_send = max(graph.dests[s].n_sources for s in receivers)
        senders = np.arange(n_send)
        joint = effects(evaluator, sender_masks(graph, senders, receivers))
        largest = float(np.abs(joint).max(initial=0.0))
        kept = senders[passing(joint, search, largest)]
        node_scores[kept] = np.where(np.isnan(node_scores[kept]), joint[kept], node_scores[kept])
        _score_edges(evaluator, search, largest, kept, receivers, edge_mask, edge_scores)
        new = [int(s) for s in kept if s not in expanded]
        expanded.update(new)
        nxt = [slot for s in new for slot in input_slots(graph, s, search.receivers)]
        rounds.append(Round(tuple(_slot_name(graph, r) for r in receivers), tuple(graph.node_names[s] for s in kept),
                            int(edge_mask.sum()), _frontier_faithfulness(evaluator, edge_mask, nxt)))
        tick(f"round {len(rounds)}: {len(kept)} senders, {int(edge_mask.sum())} edges, "
             f"f={rounds[-1].faithfulness:.2f}")
        receivers = nxt
    return PathPatchingResult(edge_mask, edge_scores, node_scores, tuple(rounds))


def _score_edges(evaluator: EdgeEvaluator, search: PathSearch, largest: float, kept: np.ndarray,
                 receivers: list[int], edge_mask: np.ndarray, edge_scores: np.ndarray) -> None:
    """Score each edge from a kept sender to a receiver alone; add those passing (or each sender's best)."""
    graph = evaluator.engine.layout.graph
    edges = np.array([graph.slot_start[r] + s for s in kept for r in receivers if s < graph.dests[r].n_sources],
                     dtype=np.int64)
    if edges.size == 0:
        return
    masks = np.ones((edges.size, graph.n_edges), dtype=bool)
    masks[np.arange(edges.size), edges] = False
    alone = effects(evaluator, masks)
    edge_scores[edges] = alone
    ok = passing(alone, search, largest)
    for s in kept:
        mine = graph.edge_src[edges] == s
        if mine.any() and not ok[mine].any():
            ok[np.flatnonzero(mine)[np.argmax(np.abs(alone[mine]))]] = True
    edge_mask[edges[ok]] = True


def _frontier_faithfulness(evaluator: EdgeEvaluator, edge_mask: np.ndarray, frontier: list[int]) -> float:
    """Faithfulness of the circuit with every edge into the unexplored receivers kept."""
    graph = evaluator.engine.layout.graph
    keep = edge_mask.copy()
    for slot in frontier:
        keep[graph.slot_start[slot]:graph.slot_start[slot + 1]] = True
    return float(evaluator.faithfulness(keep[None])[0])


def _slot_name(graph: ModelGraph, slot: int) -> str:
    dest = graph.dests[slot]
    return dest.node.name + dest.suffix
