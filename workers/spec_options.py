"""The options that say what to discover, shared by ``circat discover`` and ``circat submit``, and the
spec they make (a JSONL task file is read here, so its lines travel in the spec)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.jobs.spec import DiscoverySpec, parse_task_lines
from service.tasks import TASKS
from service.types import Ablation, Method

ModelOpt = Annotated[str, typer.Option("--model", help="'toy', a hub name, or a local Hugging Face directory")]
TaskOpt = Annotated[str, typer.Option(help="a registered task or a JSONL file of the custom format")]
MethodOpt = Annotated[Method, typer.Option(help="discovery method")]
ThresholdOpt = Annotated[list[float] | None, typer.Option(
    help="performance level(s) to reach (faithfulness; repeatable; default 0.7 0.8 0.9 0.97)")]
AblationOpt = Annotated[Ablation, typer.Option(help="what ablated items carry")]
PerPositionOpt = Annotated[bool, typer.Option(help="mean ablation per position")]
MetricOpt = Annotated[str | None, typer.Option(help="logit_diff, prob_diff or kl (default: the task's)")]
TopNOpt = Annotated[int | None, typer.Option(min=1, help="edge methods: keep the top-n edges instead")]
SignedOpt = Annotated[bool, typer.Option(help="edge methods: rank by signed score, not |score|")]
IgStepsOpt = Annotated[int, typer.Option(min=1, help="EAP-IG interpolation steps")]
OrderOpt = Annotated[list[str] | None, typer.Option(
    help="ablation sweep order(s): backward, forward, random:SEED (repeatable)")]
NOpt = Annotated[int, typer.Option(min=1, help="prompts")]
DtypeOpt = Annotated[str, typer.Option(help="float32, float16 or bfloat16")]


def make_spec(model: str, task: str, method: Method, threshold: list[float] | None, ablation: Ablation,
              per_position: bool, metric: str | None, top_n: int | None, signed: bool, ig_steps: int,
              order: list[str] | None, n: int, seed: int, dtype: str) -> DiscoverySpec:
    """The spec of these options; raises ``ValueError`` naming what is wrong."""
    lines = None
    if task not in TASKS and (task.endswith(".jsonl") or Path(task).is_file()):
        path = Path(task)
        if not path.is_file():
            raise ValueError(f"task file not found: {path}")
        lines, task = parse_task_lines(path.read_text(), path.name), path.stem
    return DiscoverySpec.parse({
        "model": model, "task": task, "task_lines": lines, "method": method,
        "levels": tuple(threshold) if threshold else None, "ablation": ablation, "per_position": per_position,
        "metric": metric, "top_n": top_n, "signed": signed, "ig_steps": ig_steps,
        "orders": tuple(order) if order else None, "n": n, "seed": seed, "dtype": dtype})
