"""What one functional evaluation is: expressions, the model and task they are evaluated on, and how.

Validated without torch, like ``DiscoverySpec``; the model, task, metric and ablation need not be those the
circuits were found with. The prompts are discovery's for the same task, ``n`` and ``seed``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.limits import MAX_NAME_LENGTH
from service.types import Ablation, Level, Metric, Mode

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH)]
ExpressionText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class EvaluationSpec(BaseModel):
    """Expressions (``service.expressions``) evaluated on one model and task."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    expressions: tuple[ExpressionText, ...] = Field(min_length=1, max_length=100)
    model: Name
    task: Name
    mode: Mode = Mode.KEEP
    metric: Metric | None = Field(default=None, description="default: the task's")
    ablation: Ablation = Ablation.RESAMPLE
    per_position: bool = False
    level: Level | None = Field(default=None, description="default: node level when any operand has no edges")
    n: int = Field(default=64, ge=1, le=100_000, description="prompts")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
