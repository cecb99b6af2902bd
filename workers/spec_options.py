"""The options that say what to discover, shared by ``circat discover`` and ``circat submit``
(``spec_command`` gives a command all of them), and the spec they make (a JSONL task file is read
here, so its lines travel in the spec)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from circat.service.jobs.spec import DiscoverySpec, PathSearch, Pruning, parse_task_lines
from circat.service.model_sources import BUILTIN
from circat.service.tasks import TASKS
from circat.service.types import Ablation, Gate, Gradient, IgPoints, Method, Search


def model_argument(model: str) -> str:
    """A model named on the command line: an existing directory named relatively (``my-model``) becomes its
    absolute path, as workers read a name that is not a path as a hub name, never from their own directory."""
    if model in BUILTIN or model.startswith(("/", ".", "~")) or not Path(model).is_dir():
        return model
    return str(Path(model).resolve())


ModelOpt = Annotated[str, typer.Option("--model", help="'toy', a hub name, or a local Hugging Face directory",
                                       callback=model_argument)]
DeviceOpt = Annotated[str | None, typer.Option(envvar="CIRCAT_DEVICE", help="cpu, cuda, cuda:1 ... (default: auto)")]
TaskOpt = Annotated[str, typer.Option(help="a registered task or a JSONL file of the custom format")]
MethodOpt = Annotated[Method, typer.Option(help="discovery method")]
ThresholdOpt = Annotated[list[float] | None, typer.Option(
    help="performance level(s) to reach (faithfulness; repeatable; default 0.7 0.8 0.9 0.97)")]
AblationOpt = Annotated[Ablation, typer.Option(help="what ablated items carry")]
PerPositionOpt = Annotated[bool, typer.Option(help="mean ablation per position")]
MetricOpt = Annotated[str | None, typer.Option(help="logit_diff, prob_diff or kl (default: the task's)")]
TopNOpt = Annotated[int | None, typer.Option(min=1, help="edge methods: keep the top-n edges instead")]
SignedOpt = Annotated[bool, typer.Option(help="edge methods: rank by signed score, not |score|")]
IgStepsOpt = Annotated[int | None, typer.Option(min=1, help=DiscoverySpec.model_fields["ig_steps"].description)]
IgPointsOpt = Annotated[IgPoints | None, typer.Option(help=DiscoverySpec.model_fields["ig_points"].description)]
GradientOpt = Annotated[Gradient | None, typer.Option(help=DiscoverySpec.model_fields["gradient"].description)]
TauOpt = Annotated[list[float] | None, typer.Option(help=DiscoverySpec.model_fields["taus"].description +
                                                   " (repeatable)")]
OrderOpt = Annotated[list[str] | None, typer.Option(
    help="ablation sweep order(s): backward, forward, random:SEED (repeatable)")]
NOpt = Annotated[int, typer.Option(min=1, help="prompts")]
SeedOpt = Annotated[int, typer.Option(min=0, help="seed of the prompts")]
ResamplesOpt = Annotated[int, typer.Option(min=1, help=DiscoverySpec.model_fields["resamples"].description)]
DtypeOpt = Annotated[str, typer.Option(help="float32, float16 or bfloat16")]


MinEffectOpt = Annotated[float | None, typer.Option(
    help="path methods: smallest |effect| kept, as a share of the behaviour (default 0.02)")]
RelativeOpt = Annotated[bool, typer.Option(help="path methods: --min-effect as a share of the largest effect")]
ReceiversOpt = Annotated[list[str] | None, typer.Option(
    help="path-patching: inputs of found nodes that become receivers: q, k, v, mlp (repeatable; default all)")]
SearchOpt = Annotated[Search, typer.Option(help="ipe: bfs (threshold, width per depth) or best-first")]
WidthOpt = Annotated[int | None, typer.Option(min=1, help="ipe: partial paths kept per depth")]
MaxPathsOpt = Annotated[int, typer.Option(min=1, help="ipe: complete paths to find at most")]
TimeBudgetOpt = Annotated[float | None, typer.Option(help="ipe: stop searching after this many seconds")]
RecheckOpt = Annotated[int, typer.Option(min=1, help="ipe-approx: estimates re-checked exactly at a time")]
OptimismOpt = Annotated[float, typer.Option(min=0, max=0.999, help="ipe-approx best-first: queue estimates scaled up "
                                            "by this quantile of the exact/estimate ratios seen (0: as estimated)")]

_PRUNING = Pruning()
StepsOpt = Annotated[int, typer.Option(min=1, help="edge-pruning: " + Pruning.model_fields["steps"].description)]
LrOpt = Annotated[float, typer.Option(min=0, help="edge-pruning: " + Pruning.model_fields["lr"].description)]
GateOpt = Annotated[Gate, typer.Option(help="edge-pruning: " + Pruning.model_fields["gate"].description)]
TargetOpt = Annotated[float, typer.Option(min=0, max=0.999, help="edge-pruning, hard-concrete: the final target "
                                          "sparsity")]
WarmStartOpt = Annotated[bool, typer.Option(help="edge-pruning: " + Pruning.model_fields["warm_start"].description)]

_PATHS = PathSearch()
"""the path options' defaults: an option at its default is not written into the spec"""

SPEC_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("threshold", ThresholdOpt, None), ("ablation", AblationOpt, Ablation.RESAMPLE),
    ("per_position", PerPositionOpt, False), ("metric", MetricOpt, None), ("top_n", TopNOpt, None),
    ("signed", SignedOpt, False), ("ig_steps", IgStepsOpt, None), ("ig_points", IgPointsOpt, None),
    ("tau", TauOpt, None), ("gradient", GradientOpt, None),
    ("order", OrderOpt, None), ("n", NOpt, 64), ("seed", int, 0), ("resamples", ResamplesOpt, 1),
    ("dtype", DtypeOpt, "float32"), ("min_effect", MinEffectOpt, None),
    ("relative", RelativeOpt, False), ("receivers", ReceiversOpt, None), ("search", SearchOpt, _PATHS.search),
    ("width", WidthOpt, None), ("max_paths", MaxPathsOpt, _PATHS.max_paths), ("time_budget", TimeBudgetOpt, None),
    ("recheck", RecheckOpt, _PATHS.recheck), ("optimism", OptimismOpt, _PATHS.optimism),
    ("steps", StepsOpt, _PRUNING.steps), ("lr", LrOpt, _PRUNING.lr), ("gate", GateOpt, _PRUNING.gate),
    ("target_sparsity", TargetOpt, _PRUNING.target), ("warm_start", WarmStartOpt, _PRUNING.warm_start),
)
"""every option after MODEL, TASK and METHOD: name, annotation, default"""


def spec_command(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` every option of ``SPEC_OPTIONS``; it receives them as one ``options`` dict."""
    own = inspect.signature(command, eval_str=True)
    params = [p for p in own.parameters.values() if p.name != "options"]
    at = next(i for i, p in enumerate(params) if p.name == "method") + 1
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
             for name, annotation, default in SPEC_OPTIONS]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]

    @functools.wraps(command)
    def run(**kwargs: Any) -> None:
        options = {name: kwargs.pop(name) for name, _, _ in SPEC_OPTIONS}
        command(**kwargs, options=options)

    run.__signature__ = own.replace(parameters=[*params[:at], *added, *params[at:]])  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in run.__signature__.parameters.values()}  # type: ignore[attr-defined]
    return run


def make_spec(model: str, task: str, method: Method, options: dict[str, Any]) -> DiscoverySpec:
    """The spec of these options (``SPEC_OPTIONS`` by name); raises ``ValueError`` naming what is wrong."""
    o = options
    lines = None
    if task not in TASKS and (task.endswith(".jsonl") or Path(task).is_file()):
        path = Path(task)
        if not path.is_file():
            raise ValueError(f"task file not found: {path}")
        lines, task = parse_task_lines(path.read_text(), path.name), path.stem
    return DiscoverySpec.parse({
        "model": model, "task": task, "task_lines": lines, "method": method,
        "levels": tuple(o["threshold"]) if o["threshold"] else None, "ablation": o["ablation"],
        "per_position": o["per_position"], "metric": o["metric"], "top_n": o["top_n"], "signed": o["signed"],
        "ig_steps": o["ig_steps"], "ig_points": o["ig_points"], "taus": tuple(o["tau"]) if o["tau"] else None,
        "gradient": o["gradient"],
        "orders": tuple(o["order"]) if o["order"] else None, "n": o["n"],
        "seed": o["seed"], "resamples": o["resamples"], "dtype": o["dtype"], "paths": _paths(method, o),
        "pruning": _pruning(method, o)})


def _pruning(method: Method, o: dict[str, Any]) -> dict[str, Any] | None:
    """The learned-mask options given (``None`` for other methods, refused there when any is set)."""
    given = {"steps": o["steps"], "lr": o["lr"], "gate": o["gate"], "target": o["target_sparsity"],
             "warm_start": o["warm_start"]}
    given = {k: v for k, v in given.items() if v != getattr(_PRUNING, k)}
    if Method(method) is not Method.EDGE_PRUNING:
        if given:
            flag = {"target": "target-sparsity", "warm_start": "no-warm-start"}.get(next(iter(given)),
                                                                                 next(iter(given)))
            raise ValueError(f"--{flag} applies to edge-pruning, not {Method(method).value}")
        return None
    return given


def _paths(method: Method, o: dict[str, Any]) -> dict[str, Any] | None:
    """The path options given (``None`` for other methods, refused there when any is set)."""
    given = {"min_effect": o["min_effect"], "relative": o["relative"] or None,
             "receivers": tuple(o["receivers"]) if o["receivers"] else None,
             "search": o["search"] if o["search"] is not _PATHS.search else None, "width": o["width"],
             "max_paths": o["max_paths"] if o["max_paths"] != _PATHS.max_paths else None,
             "time_budget_s": o["time_budget"], "recheck": o["recheck"] if o["recheck"] != _PATHS.recheck else None,
             "optimism": o["optimism"] or None}
    given = {k: v for k, v in given.items() if v is not None}
    if not Method(method).searches_paths:
        if given:
            flag = next(iter(given)).removesuffix("_s").replace("_", "-")
            raise ValueError(f"--{flag} applies to path-patching, ipe and ipe-approx, not {Method(method).value}")
        return None
    return given
