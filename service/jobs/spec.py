"""What one discovery run is: the spec a job holds and ``circat discover`` runs, validated without torch.

A custom task travels as its lines (the JSONL content), never as a path on the submitter's disk.
``canonical_json`` and ``spec_hash`` are stable: the same spec always hashes the same, so a job and
a CLI run of one spec make the same circuits, and a resubmitted spec finds its job.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from circat.service.limits import MAX_NAME_LENGTH
from circat.service.tasks import TASKS
from circat.service.types import Ablation, Gate, Gradient, IgPoints, Method, Metric, Search

ORDER = re.compile(r"backward|forward|random:\d{1,9}")
MAX_RESAMPLES = 1000
"""Most prompt sets one resampled run may draw."""
MAX_TOP_N = 2_500_000
"""Most edges a top-n circuit may ask for (the largest graph the default limits admit)."""
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH)]
Text = Annotated[str, StringConstraints(max_length=4096)]


class TaskFileError(ValueError):
    """A custom task that cannot be used; the message names every bad line."""


class TaskLine(BaseModel):
    """One example of a custom task (a line of its JSONL file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: Text
    answer: Text
    corrupted_prompt: Text
    wrong_answer: Text

    @field_validator("prompt", "answer", "corrupted_prompt", "wrong_answer")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


def problems_of(exc: ValidationError) -> str:
    """Each problem of a validation error as ``field: message``, joined by ``; ``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg'].removeprefix('Value error, ')}"
                     for e in exc.errors())


def parse_task_lines(text: str, origin: str) -> tuple[TaskLine, ...]:
    """The examples of a JSONL task; ``TaskFileError`` names every bad line of ``origin``."""
    lines: list[TaskLine] = []
    problems: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            lines.append(TaskLine.model_validate(json.loads(raw)))
        except json.JSONDecodeError as exc:
            problems.append(f"{origin}:{lineno}: not JSON ({exc.msg})")
        except ValidationError as exc:
            problems.append(f"{origin}:{lineno}: {problems_of(exc)}")
    if problems:
        raise TaskFileError(f"{len(problems)} bad line(s) in {origin}:\n  " + "\n  ".join(problems[:50]))
    if not lines:
        raise TaskFileError(f"task file has no examples: {origin}")
    return tuple(lines)


ReceiverPort = Literal["q", "k", "v", "mlp"]


class PathSearch(BaseModel):
    """Options of the path methods: path patching's iterative build and IPE's path search.

    Effects and contributions are fractions of the model's behaviour: the change of the metric
    over ``full - empty``, positive where the path supports the answer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_effect: float = Field(default=0.02, ge=0, le=1e6, allow_inf_nan=False,
                              description="smallest |effect| kept (path patching: a sender's; IPE: a path's)")
    relative: bool = Field(default=False, description="min_effect as a fraction of the round's (depth's) largest")
    receivers: tuple[ReceiverPort, ...] = Field(
        default=("q", "k", "v", "mlp"), min_length=1, max_length=4,
        description="path patching: which inputs of the nodes found become the next round's receivers")
    search: Search = Field(default=Search.BFS, description="IPE: bfs (threshold, width per depth) or best-first")
    width: int | None = Field(default=None, ge=1, le=100_000, description="IPE: partial paths kept per depth")
    max_paths: int = Field(default=100, ge=1, le=100_000, description="IPE: complete paths to find at most")
    time_budget_s: float | None = Field(default=None, gt=0, le=7 * 86400, allow_inf_nan=False,
                                        description="IPE: stop searching after this many seconds")
    recheck: int = Field(default=8, ge=1, le=10_000,
                         description="ipe-approx: derivative-scored continuations re-checked exactly "
                                     "(bfs: the best per partial path; best-first: the best of each expansion, "
                                     "then per batch from the queue's top)")
    optimism: float = Field(default=0.0, ge=0, lt=1, description="ipe-approx best-first: queue each estimate scaled "
                            "up by this quantile of the |exact| / |estimate| ratios re-checked so far (0: as "
                            "estimated; higher re-checks more estimates sooner, for closer agreement with ipe)")

    @field_validator("receivers")
    @classmethod
    def _distinct(cls, ports: tuple[str, ...]) -> tuple[str, ...]:
        order = ("q", "k", "v", "mlp")
        return tuple(p for p in order if p in ports)


class Pruning(BaseModel):
    """Options of learned edge masks (``edge-pruning``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: int = Field(default=200, ge=1, le=1_000_000, description="training steps (one masked forward + backward)")
    lr: float = Field(default=0.1, gt=0, le=100, allow_inf_nan=False, description="Adam's learning rate")
    gate: Gate = Field(default=Gate.HARD_CONCRETE, description="hard-concrete (L0, Lagrangian) or sigmoid (L1)")
    target: float = Field(default=0.95, ge=0, lt=1, description="hard-concrete: the final target sparsity")
    sparsity_weight: float = Field(default=1.0, ge=0, le=1e6, allow_inf_nan=False,
                                   description="sigmoid: weight of the mean gate in the loss")
    warm_start: bool = Field(default=True, description="initialise the gates from EAP-IG scores")


class DiscoverySpec(BaseModel):
    """Model, task, method and every method parameter of one discovery run."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: Name = Field(description="'toy', a built-in name (smollm2-135m), a hub name, or a local Hugging Face "
                                    "directory on the worker")
    task: Name = Field(description="a registered task, or the name of the custom task given in task_lines")
    task_lines: tuple[TaskLine, ...] | None = Field(default=None, max_length=100_000,
                                                    description="a custom task's examples")
    method: Method
    levels: tuple[float, ...] | None = Field(
        default=None, max_length=32, description="faithfulness levels in (0, 1] (default 0.7, 0.8, 0.9, 0.97)")
    ablation: Ablation = Ablation.RESAMPLE
    per_position: bool = False
    metric: Metric | None = Field(default=None, description="default: the task's")
    top_n: int | None = Field(default=None, ge=1, le=MAX_TOP_N)
    signed: bool = False
    ig_steps: int | None = Field(default=None, ge=1, le=1000, description="eap-ig, ipe-approx: points the gradient "
                                 "is averaged over, from the clean input towards the ablated one (1: at the clean "
                                 "input; default: eap-ig 5, ipe-approx 2)")
    ig_points: IgPoints | None = Field(default=None, description="eap-ig: where its gradients lie between the clean "
                                       "and the ablated input: mib (as MIB's reference: the ablated end included, "
                                       "the default), clean (the clean end included: one step is EAP) or "
                                       "activations (MIB's EAP-IG-activations: each source's output interpolated "
                                       "in turn)")
    gradient: Gradient | None = Field(default=None, description="eap, eap-ig: plain gradients (the default) or gim "
                                      "(GIM's backward modifications with its defaults)")
    pruning: Pruning | None = Field(default=None, description="edge-pruning: training options (default: Pruning's)")
    taus: tuple[Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)], ...] | None = Field(
        default=None, min_length=1, max_length=32,
        description="acdc: thresholds on the loss increase an edge's removal may cause, one circuit each "
                    "(default 0.01)")
    orders: tuple[Annotated[str, StringConstraints(max_length=20)], ...] | None = Field(
        default=None, max_length=64, description="ablation sweep orders: backward, forward, random:SEED",
        json_schema_extra={"items": {"type": "string", "pattern": f"^({ORDER.pattern})$"}})
    n: int = Field(default=64, ge=1, le=100_000, description="prompts")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    resamples: int = Field(default=1, ge=1, le=MAX_RESAMPLES,
                           description="prompt sets to run the method on, drawn with seeds seed, seed+1, ...; above 1 "
                                       "the run also stores a stability summary of their circuits")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    paths: PathSearch | None = Field(default=None, description="path-patching, ipe, ipe-approx: search options "
                                                               "(default: PathSearch's defaults)")

    @field_validator("levels")
    @classmethod
    def _sorted_levels(cls, levels: tuple[float, ...] | None) -> tuple[float, ...] | None:
        bad = [x for x in levels or () if not 0 < x <= 1]
        if bad:
            raise ValueError(f"performance levels must lie in (0, 1], got {', '.join(map(str, bad))}")
        return None if levels is None else tuple(sorted(set(levels)))

    @field_validator("paths")
    @classmethod
    def _explicit_paths(cls, paths: PathSearch | None) -> PathSearch | None:
        return None if paths == PathSearch() else paths

    @field_validator("pruning")
    @classmethod
    def _explicit_pruning(cls, pruning: Pruning | None) -> Pruning | None:
        return None if pruning == Pruning() else pruning

    @field_validator("orders")
    @classmethod
    def _known_orders(cls, orders: tuple[str, ...] | None) -> tuple[str, ...] | None:
        bad = [o for o in orders or () if not ORDER.fullmatch(o)]
        if bad:
            raise ValueError(f"unknown sweep order {bad[0]!r}: use backward, forward or random:SEED")
        return orders

    @model_validator(mode="after")
    def _known_task(self) -> DiscoverySpec:
        if self.task_lines is None and self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; registered: {', '.join(TASKS)}; or give task_lines")
        if self.task_lines is not None and self.task in TASKS:
            raise ValueError(f"a custom task may not reuse the registered name {self.task!r}")
        if self.task_lines is not None and not self.task_lines:
            raise ValueError("task_lines has no examples")
        if self.paths is not None and not self.method.searches_paths:
            raise ValueError(f"paths options apply to path-patching, ipe and ipe-approx, not {self.method.value}")
        if self.seed + self.resamples - 1 > 2**31 - 1:
            raise ValueError(f"seed + resamples - 1 must not pass {2**31 - 1}: the resamples' seeds follow seed")
        if self.gradient is not None and self.method not in (Method.EAP, Method.EAP_IG):
            raise ValueError(f"gradient applies to eap and eap-ig, not {self.method.value}")
        if self.pruning is not None and self.method is not Method.EDGE_PRUNING:
            raise ValueError(f"pruning options apply to edge-pruning, not {self.method.value}")
        if self.taus is not None and self.method is not Method.ACDC:
            raise ValueError(f"taus applies to acdc, not {self.method.value}")
        if self.method is Method.ACDC and (self.levels is not None or self.top_n is not None):
            raise ValueError("acdc makes one circuit per tau: levels and top_n do not apply")
        if self.ig_points is not None and self.method is not Method.EAP_IG:
            raise ValueError(f"ig_points applies to eap-ig, not {self.method.value}")
        return self

    @property
    def path_search(self) -> PathSearch:
        """The path options in force (their defaults when none were given)."""
        return self.paths or PathSearch()

    @staticmethod
    def parse(values: dict[str, Any]) -> DiscoverySpec:
        """Validate a spec; ``ValueError`` naming every problem as ``field: message``."""
        try:
            return DiscoverySpec.model_validate(values)
        except ValidationError as exc:
            raise ValueError(problems_of(exc)) from None

    def canonical_json(self) -> str:
        """The spec as canonical JSON (sorted keys, no spaces, defaults included; ``paths``, ``ig_points``,
        ``taus``, ``pruning``, ``gradient`` and ``resamples`` only when given, so specs older than them keep their
        hash)."""
        unset = {name for name in ("paths", "ig_points", "taus", "pruning", "gradient") if getattr(self, name) is None}
        unset |= {"resamples"} if self.resamples == 1 else set()
        return json.dumps(self.model_dump(mode="json", exclude=unset), sort_keys=True, separators=(",", ":"))

    def resample(self, r: int) -> DiscoverySpec:
        """The single run of resample ``r``: this spec with seed ``seed + r`` and one resample."""
        return self.model_copy(update={"seed": self.seed + r, "resamples": 1})

    def spec_hash(self) -> str:
        """A stable hash of the canonical JSON."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:32]

    def task_bytes(self) -> int:
        """The UTF-8 size of a custom task's text (0 without one): what ``CIRCAT_MAX_TASK_BYTES`` bounds."""
        return sum(len(t.encode("utf-8", "surrogatepass")) for line in self.task_lines or ()
                   for t in (line.prompt, line.answer, line.corrupted_prompt, line.wrong_answer))

    def summary(self) -> BaseModel:
        """The spec as listings show it (``SpecSummary``): a custom task's lines summarised, not repeated."""
        custom = None
        if self.task_lines is not None:
            lines = json.dumps([line.model_dump() for line in self.task_lines], sort_keys=True, separators=(",", ":"))
            custom = CustomTask(lines=len(self.task_lines), bytes=self.task_bytes(),
                                sha256=hashlib.sha256(lines.encode("utf-8", "surrogatepass")).hexdigest())
        return SpecSummary(**self.model_dump(exclude={"task_lines"}), custom_task=custom)


class CustomTask(BaseModel):
    """A custom task as a listing shows it: how many lines, how much text, and the hash of the lines."""

    model_config = ConfigDict(frozen=True)
    lines: int
    bytes: int
    sha256: str


SpecSummary = create_model(
    "SpecSummary", __config__=ConfigDict(frozen=True), __doc__="A job spec with its custom task summarised.",
    custom_task=(CustomTask | None, Field(default=None, description="a custom task's lines, summarised")),
    **{name: (f.annotation, f) for name, f in DiscoverySpec.model_fields.items() if name != "task_lines"},
)

