"""GIM's gradient modifications (Edin et al. 2025, arXiv 2505.17630) as forward hooks that change gradients only.

Each modification leaves every forward value exactly as it was and changes the backward pass:

- frozen normalisation: every LayerNorm / RMSNorm's statistic (std or rms) is a constant in the backward pass:
  the normalised value is returned unchanged by an autograd function whose backward is that of a norm with
  constant statistics, ``centred(g) / scale`` (nothing computed in the forward pass), the final norm included
  (applied where the engine unembeds);
- softmax temperature: the attention pattern's backward is the softmax Jacobian taken at ``softmax(scores / T)``,
  ``s_T * (g - <g, s_T>)``, as GIM's reference computes it;
- q / k / v scales: the gradient reaching each head's query, key and value is multiplied by its scale;
- gated-MLP scales: in ``act(gate(x)) * up(x)``, the gradient of the gate branch and of the up branch are each
  multiplied by their scale (models without a gated MLP have no such branches).

The defaults are GIM's: temperature 2, scales 0.25, 0.25, 0.5 and 0.5, 0.5. The ``gim-explain`` package (0.1.4, the
newest on the registry) is not used: it patches ``torch.softmax`` process-wide and swaps norm modules, which a
worker running other jobs cannot allow, and its releases up to 0.1.4 never apply the gated-MLP scales.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from circat.workers.engine.patching import Hook
from circat.workers.models import LoadedModel


@dataclass(frozen=True)
class GimConfig:
    """Which modifications apply, and their constants (GIM's defaults)."""

    freeze_norm: bool = True
    temperature: float = 2.0
    q_scale: float = 0.25
    k_scale: float = 0.25
    v_scale: float = 0.5
    gate_scale: float = 0.5
    up_scale: float = 0.5

    def params(self) -> dict[str, float | bool]:
        """The settings as recorded in a circuit's provenance."""
        return {"gim_" + k: v for k, v in self.__dict__.items()}


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``scale`` backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale  # type: ignore[attr-defined]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return g * ctx.scale, None  # type: ignore[attr-defined]


class _SoftmaxAtTemperature(torch.autograd.Function):
    """Returns the model's pattern unchanged; its backward to the scores is the softmax Jacobian at ``scores / T``."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, scores: torch.Tensor, pattern: torch.Tensor,
                temperature: float) -> torch.Tensor:
        ctx.save_for_backward(scores)
        ctx.temperature = temperature  # type: ignore[attr-defined]
        return pattern.view_as(pattern)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (scores,) = ctx.saved_tensors  # type: ignore[attr-defined]
        soft = torch.softmax(scores / ctx.temperature, dim=-1)  # type: ignore[attr-defined]
        return soft * (g - (g * soft).sum(-1, keepdim=True)), None, None


class _FrozenNorm(torch.autograd.Function):
    """Returns a norm's output unchanged; its backward reaches the norm's input as a norm's whose statistic is a
    constant: the gradient over the statistic, centred for a LayerNorm."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, normalized: torch.Tensor,
                scale: torch.Tensor, rms: bool) -> torch.Tensor:
        ctx.save_for_backward(scale.detach())
        ctx.rms = rms  # type: ignore[attr-defined]
        return normalized.view_as(normalized)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (scale,) = ctx.saved_tensors  # type: ignore[attr-defined]
        g = g / scale
        return (g if ctx.rms else g - g.mean(-1, keepdim=True)), None, None, None  # type: ignore[attr-defined]


def frozen_norm(x: torch.Tensor, normalized: torch.Tensor, scale: torch.Tensor, rms: bool) -> torch.Tensor:
    """``normalized`` (the norm of ``x`` by its statistic ``scale``) whose gradient reaches ``x`` with ``scale``
    held constant; nothing reaches the norm's own computation."""
    return _FrozenNorm.apply(x, normalized, scale, rms)


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` whose gradient is multiplied by ``scale``."""
    return _ScaleGrad.apply(x, scale)


def softmax_backward_at(scores: torch.Tensor, pattern: torch.Tensor, temperature: float) -> torch.Tensor:
    """``pattern`` (``softmax(scores)``) whose gradient reaches ``scores`` through the Jacobian at ``scores / T``."""
    return _SoftmaxAtTemperature.apply(scores, pattern, temperature)


def _scaled(scale: float) -> Callable[..., torch.Tensor]:
    return lambda x, hook: scale_grad(x, scale)


def _norm_hooks(prefix: str, rms: bool) -> list[Hook]:
    """Hooks freezing one norm's statistic: its input and scale are read as they pass, its output rebuilt."""
    seen: dict[str, torch.Tensor] = {}

    def keep(key: str) -> Callable[..., None]:
        def hook(x: torch.Tensor, hook: object) -> None:
            seen[key] = x
        return hook

    def frozen(normalized: torch.Tensor, hook: object) -> torch.Tensor:
        return frozen_norm(seen["in"], normalized, seen["scale"], rms)

    return [(f"{prefix}.hook_in", keep("in")), (f"{prefix}.hook_scale", keep("scale")),
            (f"{prefix}.hook_normalized", frozen)]


def _softmax_hooks(layer: int, temperature: float) -> list[Hook]:
    seen: dict[str, torch.Tensor] = {}

    def scores(x: torch.Tensor, hook: object) -> None:
        seen["scores"] = x

    return [(f"blocks.{layer}.attn.hook_attn_scores", scores),
            (f"blocks.{layer}.attn.hook_pattern",
             lambda pattern, hook: softmax_backward_at(seen["scores"], pattern, temperature))]


def gim_hooks(model: LoadedModel, config: GimConfig) -> tuple[list[Hook], list[Hook]]:
    """The hooks of a gradient pass under ``config``: those of the blocks, and those of the final norm (which the
    engine applies where it unembeds, outside the hooked run)."""
    names = model.bridge.hook_dict
    rms = model.bridge.cfg.normalization_type == "RMS"
    hooks: list[Hook] = []
    for layer in range(model.shape.n_layers):
        at = f"blocks.{layer}"
        if config.freeze_norm:
            hooks += _norm_hooks(f"{at}.ln1", rms) + _norm_hooks(f"{at}.ln2", rms)
        if config.temperature != 1:
            hooks += _softmax_hooks(layer, config.temperature)
        hooks += [(f"{at}.attn.hook_{p}", _scaled(s)) for p, s in
                  (("q", config.q_scale), ("k", config.k_scale), ("v", config.v_scale)) if s != 1]
        if f"{at}.mlp.gate.hook_out" in names:
            hooks += [(f"{at}.mlp.{branch}.hook_out", _scaled(s)) for branch, s in
                      (("gate", config.gate_scale), ("in", config.up_scale)) if s != 1]
    final = _norm_hooks("ln_final", rms) if config.freeze_norm else []
    return [h for h in hooks if h[0] in names], final


@contextmanager
def quiet_norm_edits() -> Iterator[None]:
    """Silence the bridge's notice that a hooked norm output is rebuilt from its hooked values (intended here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A forward hook edited hook_scale/hook_normalized")
        yield
