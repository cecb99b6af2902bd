"""What one functional run is: expressions evaluated on a model's task (``evaluate``), grown towards a task
(``extend``) or evaluated on many tasks (``transfer``), and how.

Validated without torch, like ``DiscoverySpec``, and run through the same job table, runner and queue; the
model, task, metric and ablation need not be those the circuits were found with. The prompts are
discovery's for the same task, ``n`` and ``seed``. ``canonical_json`` and ``spec_hash`` make a resubmitted
spec find its job.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from circat.service.bootstrap import DEFAULT_BOOTSTRAP
from circat.service.limits import MAX_NAME_LENGTH
from circat.service.tasks import TASKS
from circat.service.types import Ablation, Level, Metric, Mode

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH)]
ExpressionText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Kind = Literal["evaluate", "extend", "transfer"]


class EvaluationSpec(BaseModel):
    """Expressions (``service.expressions``) evaluated on one model: on ``task``, or on ``tasks`` (transfer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Kind = Field(default="evaluate", description="evaluate on task, extend towards task, or transfer: "
                                                       "evaluate on every one of tasks")
    expressions: tuple[ExpressionText, ...] = Field(min_length=1, max_length=100)
    model: Name
    task: Name | None = Field(default=None, description="evaluate, extend: the task (a registered one)")
    tasks: tuple[Name, ...] | None = Field(default=None, max_length=64,
                                           description="transfer: the columns (default: every registered task)")
    mode: Mode = Mode.KEEP
    metric: Metric | None = Field(default=None, description="default: the task's")
    ablation: Ablation = Ablation.RESAMPLE
    per_position: bool = False
    level: Level | None = Field(default=None, description="default: node level when any operand has no edges")
    threshold: float | None = Field(default=None, gt=0, le=1, description="extend: the faithfulness to reach "
                                                                          "(default 0.8)")
    candidates: int | None = Field(default=None, ge=0, le=10_000_000, description="extend at edge level: the "
                                   "remaining edges (by |EAP score|) each step evaluates exactly; 0: all (default 64)")
    bootstrap: int = Field(default=DEFAULT_BOOTSTRAP, ge=0, le=10_000, description="evaluate, transfer: resamples "
                           "of the prompts for each value's 95 % interval (0: none); no extra forward pass")
    n: int = Field(default=64, ge=1, le=100_000, description="prompts")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    @model_validator(mode="after")
    def _tasks_fit_the_kind(self) -> EvaluationSpec:
        named = [self.task] if self.task else list(self.tasks or ())
        unknown = [t for t in named if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(map(repr, unknown))}; registered: {', '.join(TASKS)}")
        if self.kind == "transfer" and self.task is not None:
            raise ValueError("a transfer takes tasks (its columns), not task")
        if self.kind != "transfer" and (self.task is None or self.tasks is not None):
            raise ValueError(f"{self.kind} takes one task (and no tasks)")
        if self.kind == "extend" and len(self.expressions) != 1:
            raise ValueError("extend grows one circuit or expression")
        for name in ("threshold", "candidates"):
            if getattr(self, name) is not None and self.kind != "extend":
                raise ValueError(f"{name} applies to extend")
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        """The tasks this spec evaluates on."""
        return (self.task,) if self.task else tuple(self.tasks or TASKS)

    @property
    def method(self) -> str:
        """What the job table lists as the job's method: the kind."""
        return self.kind

    def canonical_json(self) -> str:
        """The spec as canonical JSON (sorted keys, no spaces, defaults included)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        """A stable hash of the canonical JSON."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:32]

    def task_bytes(self) -> int:
        """No custom task text: 0 (``CIRCAT_MAX_TASK_BYTES`` bounds discovery specs' lines)."""
        return 0

    def summary(self) -> EvaluationSpec:
        """The spec as listings show it: itself (it holds no task lines)."""
        return self
