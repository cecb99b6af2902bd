"""What each component of a circuit does on a task (``circat evaluate --components``): pure data, no torch.

Made by the engine (``workers.engine.functional.component_effects``), printed by the CLI and drawn in the report.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ComponentEffects:
    """Inside one circuit, at node level: what each component does, and what whole layers of heads add."""

    base: float
    """the circuit's faithfulness"""
    removed: dict[str, float]
    """per component of the circuit: the faithfulness lost when it alone is removed"""
    added: dict[str, float]
    """per component outside it: the faithfulness gained when it alone is added"""
    layer_heads: dict[int, float]
    """per layer L: the faithfulness with every head of L added"""
    heads_upto: dict[int, float]
    """per layer L: the faithfulness with every head of layers 0..L added"""
    passes: dict[str, int]
    """batched forward passes per group of masks"""


@dataclass(frozen=True)
class EffectsView:
    """Component effects with what they were measured on, as the report shows them."""

    expression: str
    model: str
    task: str
    metric: str
    effects: ComponentEffects
