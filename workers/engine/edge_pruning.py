"""Learned edge masks (seed 003; Edge Pruning, Bhaskar et al. 2024; UGS's sigmoid masks as an option).

One coefficient ``z_e`` in [0, 1] per edge mixes the clean and the ablated source output into each destination's
input: ``input_d = current + sum_e (1 - z_e) (ablated_e - current_e)``, exactly the fast engine's masked sum with
a fractional mask, so one training step is one masked forward and one backward, whatever the number of edges.

Hard-concrete gates (the default): ``z = clamp(sigmoid((log u - log(1 - u) + log_alpha) / beta) (r - l) + l, 0, 1)``
with ``u ~ U(0, 1)``, ``beta = 2/3``, ``l = -0.1``, ``r = 1.1``; the expected share of edges kept is the mean of
``sigmoid(log_alpha - beta log(-l / r))``. The loss is the circuit's loss (KL to the full model, or 1 -
faithfulness for a task metric) plus ``lambda_1 (s - t) + lambda_2 (s - t)^2``, where ``s`` is the expected
sparsity and ``t`` the target, raised linearly from 0 to ``target`` over the first half of the steps; the
Lagrange multipliers ascend the same loss the gates descend. Sigmoid gates (``z = sigmoid(log_alpha)``) add
``sparsity_weight x mean(z)`` instead. Warm start: ``log_alpha`` from the rank of each edge's |EAP-IG score|.

The learned parameters rank the edges (``sigmoid(log_alpha)``: the deterministic gate clamps many edges to
exactly 0 or 1, which would tie them); the circuits at each faithfulness level are chosen from that ranking as for
every edge method (bisection on the pruned top-k). Every ``checkpoint_every`` steps the state (gates, multipliers,
optimiser, random generator, step) is saved, so a run killed midway resumes where it was and ends exactly as an
uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from circat.service.types import Gate
from circat.workers.engine.patching import PatchingEngine
from circat.workers.tasks import Metric

BETA, LOW, HIGH = 2 / 3, -0.1, 1.1


@dataclass(frozen=True)
class PruningConfig:
    """How the gates are trained."""

    steps: int = 200
    lr: float = 0.1
    gate: Gate = Gate.HARD_CONCRETE
    target: float = 0.95
    """hard-concrete: the share of edges the schedule finally asks to remove"""
    sparsity_weight: float = 1.0
    """sigmoid: the weight of the mean gate in the loss"""
    warm_start: bool = True
    seed: int = 0
    checkpoint_every: int = 25


@dataclass(frozen=True)
class LearnedGates:
    """The trained gates and how training went."""

    gates: np.ndarray
    """each edge's ``sigmoid(log_alpha)``: monotone in the learned parameter and without the ties that clamping
    makes (many gates sit at exactly 0 or 1), so it ranks the edges"""
    log_alpha: np.ndarray
    history: list[tuple[int, float, float]]
    """(step, loss, expected sparsity) every ``checkpoint_every`` steps and at the end"""
    resumed_from: int


def _sample(log_alpha: torch.Tensor, gate: Gate, generator: torch.Generator) -> torch.Tensor:
    if gate is Gate.SIGMOID:
        return torch.sigmoid(log_alpha)
    u = torch.rand(log_alpha.shape, generator=generator).clamp(1e-6, 1 - 1e-6).to(log_alpha.device)
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / BETA)
    return (s * (HIGH - LOW) + LOW).clamp(0, 1)


def _kept_share(log_alpha: torch.Tensor, gate: Gate) -> torch.Tensor:
    """The expected share of edges kept (hard concrete: not exactly zero; sigmoid: the mean gate)."""
    if gate is Gate.SIGMOID:
        return torch.sigmoid(log_alpha).mean()
    return torch.sigmoid(log_alpha - BETA * math.log(-LOW / HIGH)).mean()


def warm_start(scores: np.ndarray) -> torch.Tensor:
    """Initial ``log_alpha`` from attribution scores: 0.5 for the least |score|, 3.5 for the largest, by rank."""
    order = np.argsort(np.argsort(np.abs(np.nan_to_num(scores)), kind="stable"), kind="stable")
    return torch.as_tensor(0.5 + 3.0 * order / max(1, len(order) - 1), dtype=torch.float32)


def _circuit_loss(engine: PatchingEngine, z: torch.Tensor, full: float, empty: float) -> torch.Tensor:
    final = engine.masked_logits(z[None])
    value = engine.metric_of(final)[0]
    if engine.metric is Metric.KL:
        return value
    return 1 - (value - empty) / (full - empty)


def train_gates(engine: PatchingEngine, config: PruningConfig, init: torch.Tensor, full: float, empty: float,
                checkpoint: Path | None = None,
                tick: Callable[[int, float, float], None] = lambda *_: None) -> LearnedGates:
    """Train one gate per edge from ``init`` (``log_alpha``); ``full``/``empty``: the metric of the full model and
    the empty circuit. Resumes from ``checkpoint`` when it holds a state of this run; ``tick(step, loss, sparsity)``
    after each step."""
    log_alpha = init.clone().to(engine.model.device).requires_grad_(True)
    lambdas = torch.zeros(2, device=engine.model.device, requires_grad=True)
    optimiser = torch.optim.Adam([log_alpha, lambdas], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    start, history = 0, []
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        with torch.no_grad():
            log_alpha.copy_(state["log_alpha"])
            lambdas.copy_(state["lambdas"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        start, history = state["step"], state["history"]
    resumed_from = start
    for step in range(start, config.steps):
        optimiser.zero_grad()
        with torch.enable_grad():
            z = _sample(log_alpha, config.gate, generator)
            loss = _circuit_loss(engine, z, full, empty)
            kept = _kept_share(log_alpha, config.gate)
            total = loss + _sparsity_term(kept, lambdas, config, step)
            total.backward()
        assert lambdas.grad is not None
        lambdas.grad.neg_()  # the multipliers ascend what the gates descend
        optimiser.step()
        sparsity, value = 1 - float(kept.detach()), float(loss.detach())
        done = step + 1
        if done % config.checkpoint_every == 0 or done == config.steps:
            history.append((done, value, sparsity))
            if checkpoint is not None:
                _save(checkpoint, log_alpha, lambdas, optimiser, generator, done, history)
        tick(done, value, sparsity)
    with torch.no_grad():
        gates = torch.sigmoid(log_alpha)
    return LearnedGates(gates.cpu().double().numpy(), log_alpha.detach().cpu().double().numpy(), history,
                        resumed_from)


def _sparsity_term(kept: torch.Tensor, lambdas: torch.Tensor, config: PruningConfig, step: int) -> torch.Tensor:
    if config.gate is Gate.SIGMOID:
        return config.sparsity_weight * kept
    target = config.target * min(1.0, step / max(1, config.steps // 2))
    gap = (1 - kept) - target
    return lambdas[0] * gap + lambdas[1] * gap**2


def _save(path: Path, log_alpha: torch.Tensor, lambdas: torch.Tensor, optimiser: torch.optim.Optimizer,
          generator: torch.Generator, step: int, history: list[tuple[int, float, float]]) -> None:
    """Write the state beside ``path`` and move it into place, so a kill mid-write leaves the last checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"log_alpha": log_alpha.detach().cpu(), "lambdas": lambdas.detach().cpu(),
                "optimiser": optimiser.state_dict(), "generator": generator.get_state(), "step": step,
                "history": history}, partial)
    partial.replace(path)
