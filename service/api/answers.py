"""The overlap answers of the REST API as declared models, so OpenAPI states every field, the null model's
included (``/overlap``, ``/consensus``; ``/matrix`` answers the ``Matrix`` dataclass itself)."""

from __future__ import annotations

from dataclasses import asdict

from pydantic import BaseModel

from circat.service.null import Chance
from circat.service.overlap import Consensus, PairOverlap
from circat.service.stability import RunComparison
from circat.service.types import Level


class PairAnswer(BaseModel):
    """How two circuits overlap at one level, and what chance gives."""

    level: Level
    size_a: int
    size_b: int
    shared: list[str]
    n_shared: int
    jaccard: float
    a_in_b: float
    b_in_a: float
    chance: Chance
    runs: RunComparison | None = None
    """where both circuits come from resampled runs: the cross-run Jaccards against each run's own"""


class OverlapAnswer(BaseModel):
    a: str
    b: str
    levels: list[PairAnswer]


class ConsensusAnswer(BaseModel):
    ids: list[str]
    levels: list[Consensus]


def overlap_answer(a: str, b: str, pairs: list[PairOverlap]) -> OverlapAnswer:
    return OverlapAnswer(a=a, b=b, levels=[PairAnswer(**asdict(p), n_shared=p.n_shared) for p in pairs])
