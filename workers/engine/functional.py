"""Functional evaluation of selections (circuits, expressions): keep them, or knock them out of the full model.

``keep``:     (m(C) - m(empty)) / (m(N) - m(empty)), everything outside C ablated: discovery's faithfulness.
``knockout``: (m(N without C) - m(empty)) / (m(N) - m(empty)): the share of the behaviour left without C.

At node level the components (heads and MLPs) are ablated and ``empty`` ablates every component (the
embeddings and the logits stay); at edge level edges are ablated and ``empty`` ablates every edge, as
discovery measures each kind of circuit. All node-level selections of one call run as one batch of masks
with both baselines; edge-level ones go through the ``EdgeEvaluator`` (each distinct mask once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from circat.service.bootstrap import Interval, faithfulness_interval
from circat.service.effects import ComponentEffects
from circat.service.expressions import Selection
from circat.service.types import Level, Mode, NodeKind
from circat.workers.engine.attribution import edge_attribution
from circat.workers.engine.evaluate import (
    Baselines,
    EdgeEvaluator,
    batched_metrics,
    budget,
    masks_per_run,
    prompt_means,
)
from circat.workers.engine.patching import PatchingEngine


@dataclass(frozen=True)
class FunctionalResult:
    """One selection evaluated on one task: the number and the metric values behind it."""

    selection: Selection
    mode: Mode
    value: float
    metric: float
    """the metric of the run: the circuit alone (keep) or the model without it (knockout)"""
    full: float
    empty: float
    interval: Interval | None = None
    """the bootstrap interval of ``value`` over prompts (``service.bootstrap``), when asked for"""


def keep_mask(selection: Selection, mode: Mode, component_mask: np.ndarray) -> np.ndarray:
    """The mask a run keeps (1) for a selection and mode: nodes at node level, edges at edge level."""
    if selection.level is Level.EDGE:
        assert selection.edge_mask is not None
        return selection.edge_mask if mode is Mode.KEEP else ~selection.edge_mask
    chosen = selection.node_mask & component_mask
    return (chosen if mode is Mode.KEEP else ~chosen & component_mask) | ~component_mask


def node_masks_per_run(engine: PatchingEngine) -> int:
    """How many node masks fit one batched forward within the memory budget: a node-masked run holds no
    per-source buffer (edge runs do), only a forward's activations: the residual-sized tensors of a layer (MLP
    hidden included, about 8 x d_model per token) and its attention scores."""
    b, p = engine.batch.clean.shape
    shape, size = engine.model.shape, engine.model.dtype.itemsize
    per_mask = b * p * (8 * shape.d_model + 2 * shape.n_heads * p) * size
    return max(masks_per_run(engine), budget(engine.model.device) // per_mask)


def node_metrics(engine: PatchingEngine, masks: np.ndarray, per_prompt: bool = False) -> np.ndarray:
    """The metric of every node mask (rows), or ``[mask, prompt]``, batched within the engine's memory budget."""
    return batched_metrics(lambda keep: engine.evaluate_nodes(keep, per_prompt), masks, node_masks_per_run(engine))


def evaluate_selections(engine: PatchingEngine, selections: Sequence[Selection], mode: Mode = Mode.KEEP,
                        bootstrap: int = 0, seed: int = 0) -> list[FunctionalResult]:
    """Every selection evaluated in ``mode`` on the engine's prompts: node ones in one batch, edge ones memoised;
    with ``bootstrap`` resamples, each value's interval over prompts from the same passes' per-prompt values."""
    graph = engine.layout.graph
    components = graph.component_mask
    out: dict[int, FunctionalResult] = {}
    for level, full, empty in ((Level.NODE, np.ones(graph.n_nodes, bool), ~components),
                               (Level.EDGE, np.ones(graph.n_edges, bool), np.zeros(graph.n_edges, bool))):
        chosen = [i for i, s in enumerate(selections) if s.level is level]
        if not chosen:
            continue
        masks = np.stack([full, empty, *(keep_mask(selections[i], mode, components) for i in chosen)])
        values, prompts = _run_metrics(engine, level, masks, bool(bootstrap))
        base = Baselines(float(values[0]), float(values[1]))
        for row, i in enumerate(chosen, start=2):
            interval = None if prompts is None else faithfulness_interval(prompts[row], prompts[0], prompts[1],
                                                                          bootstrap, seed=seed)
            out[i] = FunctionalResult(selections[i], mode, float(base.faithfulness(values[row])), float(values[row]),
                                      base.full, base.empty, interval)
    return [out[i] for i in range(len(selections))]


def _run_metrics(engine: PatchingEngine, level: Level, masks: np.ndarray,
                 per_prompt: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The metric of every mask (node masks in one batch, edge masks each distinct one once) and, when asked,
    the per-prompt values ``[mask, prompt]`` they are the means of, from the same passes."""
    if level is Level.EDGE:  # the baselines (the first two masks) in a batch of their own, as discovery runs them
        evaluator = EdgeEvaluator(engine, per_prompt=per_prompt)
        values = np.concatenate([evaluator.metrics(masks[:2]), evaluator.metrics(masks[2:])])
        return values, evaluator.prompt_values(masks) if per_prompt else None
    if not per_prompt:
        return node_metrics(engine, masks), None
    prompts = node_metrics(engine, masks, per_prompt=True)
    return prompt_means(prompts), prompts


def component_effects(engine: PatchingEngine, selection: Selection) -> ComponentEffects:
    """Every component of ``selection`` removed alone, every other added alone, and the seeds' layer sweeps:
    one batched pass of masks per group (more only past the memory budget)."""
    graph = engine.layout.graph
    components = graph.component_mask
    kept = selection.node_mask & components
    inside, outside = np.flatnonzero(kept), np.flatnonzero(components & ~kept)
    heads = np.array([n.kind is NodeKind.ATTENTION for n in graph.nodes])
    layer_of = np.array([-1 if n.layer is None else n.layer for n in graph.nodes])
    layers = range(graph.shape.n_layers)
    groups = {
        "removed": [_with(kept, i, False) for i in inside],
        "added": [_with(kept, i, True) for i in outside],
        "layer_heads": [kept | (heads & (layer_of == layer)) for layer in layers],
        "heads_upto": [kept | (heads & (layer_of <= layer)) for layer in layers],
    }
    base, start = _baselines_and_start(engine, kept)
    f = {name: np.asarray(base.faithfulness(node_metrics(engine, np.stack(masks) | ~components)))
         for name, masks in groups.items() if masks}
    return ComponentEffects(
        start,
        {graph.nodes[i].name: start - float(v) for i, v in zip(inside, f.get("removed", []), strict=True)},
        {graph.nodes[i].name: float(v) - start for i, v in zip(outside, f.get("added", []), strict=True)},
        dict(zip(layers, map(float, f["layer_heads"]), strict=True)),
        dict(zip(layers, map(float, f["heads_upto"]), strict=True)),
        {name: _passes(engine, len(masks)) for name, masks in groups.items()},
    )


def _baselines_and_start(engine: PatchingEngine, kept: np.ndarray) -> tuple[Baselines, float]:
    """The node baselines and the faithfulness of the components ``kept``, from one batch of three masks."""
    components = engine.layout.graph.component_mask
    values = node_metrics(engine, np.stack([np.ones(len(kept), bool), ~components, kept | ~components]))
    base = Baselines(float(values[0]), float(values[1]))
    return base, float(base.faithfulness(values[2]))


def _passes(engine: PatchingEngine, n_masks: int) -> int:
    """Batched forward passes ``node_metrics`` makes for ``n_masks`` node masks."""
    return -(-n_masks // node_masks_per_run(engine))


def _with(mask: np.ndarray, i: int, value: bool) -> np.ndarray:
    out = mask.copy()
    out[i] = value
    return out


DEFAULT_CANDIDATES = 64
"""edge-level ``extend``: the remaining edges (by |EAP score|) each step evaluates exactly"""
TIE = 1e-6
"""faithfulness gains closer than this are equal: the earlier candidate wins"""


@dataclass(frozen=True)
class Extension:
    """A circuit grown greedily towards a level on a task: what was added, in order, and where it got."""

    level: Level
    mask: np.ndarray
    """the grown circuit: its nodes at node level (``input`` and ``logits`` included), its edges at edge level"""
    added: list[str]
    faithfulness: list[float]
    """before the first addition, then after each"""
    reached: bool
    passes: int
    """batched forward passes (the edge shortlist's attribution counts one)"""


def extend_selection(engine: PatchingEngine, selection: Selection, level: float,
                     candidates: int = DEFAULT_CANDIDATES) -> Extension:
    """Add, one at a time, the component (node level) or edge (edge level) whose addition gives the largest
    faithfulness, until ``level`` is reached or nothing is left; each step is one batched pass over the candidates.

    At node level every component outside the circuit is a candidate. At edge level each step evaluates exactly
    the ``candidates`` remaining edges with the largest |EAP score| on the full model (0: every remaining edge);
    where no single edge does better than another (an edge alone rarely completes a path), the larger score wins.
    """
    graph = engine.layout.graph
    if selection.level is Level.EDGE:
        assert selection.edge_mask is not None
        evaluator = EdgeEvaluator(engine)
        rank = np.abs(edge_attribution(engine).numpy())
        shortlist = _shortlist(rank, candidates)
        start = float(evaluator.faithfulness(selection.edge_mask[None])[0])
        kept, added, history, passes = _greedy(
            selection.edge_mask, start, lambda k: shortlist(np.flatnonzero(~k)),
            lambda masks: (evaluator.faithfulness(masks), -(-len(masks) // masks_per_run(engine))), level)
        return Extension(Level.EDGE, kept, [graph.edge_name(i) for i in added], history, history[-1] >= level,
                         passes + 3)  # the attribution, the baselines, the start
    components = graph.component_mask
    base, start = _baselines_and_start(engine, selection.node_mask & components)
    kept, added, history, passes = _greedy(
        selection.node_mask & components, start, lambda k: np.flatnonzero(components & ~k),
        lambda masks: (np.asarray(base.faithfulness(node_metrics(engine, masks | ~components))),
                       _passes(engine, len(masks))), level)
    return Extension(Level.NODE, kept | ~components, [graph.nodes[i].name for i in added], history,
                     history[-1] >= level, passes + 1)  # the baselines and the start, one batch


def _shortlist(rank: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """The ``k`` of some indices with the largest ``rank`` (all when ``k`` is 0), largest first."""
    def pick(indices: np.ndarray) -> np.ndarray:
        return indices[np.argsort(-rank[indices], kind="stable")[:k or None]]
    return pick


def _greedy(kept: np.ndarray, start: float, candidates_of: Callable[[np.ndarray], np.ndarray],
            faithfulness_of: Callable[[np.ndarray], tuple[np.ndarray, int]],
            level: float) -> tuple[np.ndarray, list[int], list[float], int]:
    """The greedy loop over a keep mask from its faithfulness ``start``: the grown mask, the indices added, the
    faithfulness history, the passes of its steps. Of candidates within ``TIE`` of the best, the first wins."""
    history, added, passes = [start], [], 0
    while history[-1] < level:
        candidates = candidates_of(kept)
        if not len(candidates):
            break
        f, n = faithfulness_of(np.stack([_with(kept, i, True) for i in candidates]))
        passes += n
        best = int(candidates[np.flatnonzero(f >= f.max() - TIE)[0]])
        kept = _with(kept, best, True)
        added.append(best)
        history.append(float(f.max()))
    return kept, added, history, passes
