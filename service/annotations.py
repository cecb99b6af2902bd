"""The parts of a circuit's annotations that pages and the engine read, and their schema.

Annotations are free JSON, but four keys mean something: ``evaluation`` (the metric of the full and the
empty model, faithfulness curves, faithfulness per sweep order, faithfulness's bootstrap interval),
``paths`` (IPE's paths), ``rounds`` (path patching's rounds) and ``mib_cfg`` (an imported MIB file's extra
``cfg``). A circuit whose known keys do not fit is refused on import, every problem named as
``annotations.<key>...``; one stored before this check is still shown, its curves skipped with the reason
(``problems`` tells which).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Strict, ValidationError, model_validator

Number = Annotated[float, Strict()]
"""a JSON number (an int is one), never a string or a boolean"""
Count = Annotated[int, Strict()]
Text = Annotated[str, Strict()]


class _Known(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class CurveDoc(_Known):
    """A faithfulness curve: per edge budget (percent of edges, edge count), the faithfulness reached."""

    percents: list[Number]
    edges: list[Count] | None = None
    faithfulness: list[Number]
    cpr: Number | None = None
    cmd: Number | None = None

    @model_validator(mode="after")
    def _same_lengths(self) -> CurveDoc:
        lengths = {len(self.percents), len(self.faithfulness), len(self.edges or self.percents)}
        if len(lengths) > 1:
            raise ValueError("percents, edges and faithfulness must have one length")
        return self


class IntervalDoc(_Known):
    """A percentile bootstrap interval of faithfulness over prompts (``samples`` resamples, coverage ``level``)."""

    low: Number
    high: Number
    samples: Count
    level: Number


class EvaluationDoc(_Known):
    """What discovery measured of a circuit."""

    full_metric: Number | None = None
    empty_metric: Number | None = None
    faithfulness_interval: IntervalDoc | None = None
    masks_evaluated: Count | None = None
    faithfulness_by_order: dict[str, Number] | None = None
    curve_signed: CurveDoc | None = None
    curve_absolute: CurveDoc | None = None


class PathDoc(_Known):
    """One path IPE found: its edges, from the first node to the logits, and its contribution."""

    edges: list[Text]
    contribution: Number


class PathsDoc(_Known):
    """IPE's paths, by the sign of their contribution."""

    positive: list[PathDoc] = []
    negative: list[PathDoc] = []


class KnownAnnotations(_Known):
    """The annotation keys with a meaning; any other key is kept as given."""

    evaluation: EvaluationDoc | None = None
    paths: PathsDoc | None = None
    rounds: list[dict[str, Any]] | None = None
    mib_cfg: dict[str, Any] | None = None


def problems(annotations: dict[str, Any]) -> list[str]:
    """Every way the known keys of ``annotations`` do not fit their schema, as ``annotations.<where>: <problem>``."""
    try:
        KnownAnnotations.model_validate(annotations)
    except ValidationError as exc:
        return [f"annotations.{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()]
    return []


def evaluation_of(annotations: dict[str, Any]) -> EvaluationDoc | None:
    """The validated ``evaluation`` of a circuit's annotations, or ``None`` when it has none."""
    return KnownAnnotations.model_validate(annotations).evaluation


def faithfulness_interval(annotations: dict[str, Any]) -> tuple[float, float] | None:
    """The bootstrap interval of faithfulness discovery stored with a circuit, if any (none when unreadable)."""
    if problems(annotations):
        return None
    found = evaluation_of(annotations)
    interval = found and found.faithfulness_interval
    return None if interval is None else (interval.low, interval.high)
