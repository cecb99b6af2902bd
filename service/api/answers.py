"""The overlap answers of the REST API as declared models, so OpenAPI states every field, the null model's
included (``/overlap``, ``/consensus``, ``/matrix``)."""

from __future__ import annotations

from dataclasses import asdict

from pydantic import BaseModel, Field

from service.overlap import Consensus, Matrix, PairOverlap
from service.types import Level, NullModel


class ChanceAnswer(BaseModel):
    """What the null model gives for one answer."""

    null: NullModel = Field(description="the null model used (uniform at node level: the two are the same there)")
    samples: int = Field(description="draws behind the figures; 0 where they are exact")
    expected_shared: float = Field(description="expected number of shared items")
    expected_jaccard: float | None = Field(description="expected Jaccard (pairs only)")
    p: float = Field(description="probability of sharing at least as much by chance")


class PairAnswer(BaseModel):
    """How two circuits overlap at one level."""

    level: Level
    size_a: int
    size_b: int
    shared: list[str]
    n_shared: int
    jaccard: float
    a_in_b: float
    b_in_a: float
    chance: ChanceAnswer


class OverlapAnswer(BaseModel):
    a: str
    b: str
    levels: list[PairAnswer]


class ConsensusLevel(BaseModel):
    """Items held by at least ``min_support`` of the circuits, and how many chance would give."""

    level: Level
    n_circuits: int
    min_support: int
    support: dict[str, int]
    chance: ChanceAnswer


class ConsensusAnswer(BaseModel):
    ids: list[str]
    levels: list[ConsensusLevel]


class MatrixAnswer(BaseModel):
    """Pairwise Jaccard with chance's expectation and tail probability per cell; null where a pair lacks edges."""

    ids: list[str]
    node: list[list[float]]
    edge: list[list[float | None]]
    null: NullModel
    samples: int
    node_expected: list[list[float]]
    node_p: list[list[float]]
    edge_expected: list[list[float | None]]
    edge_p: list[list[float | None]]


def overlap_answer(a: str, b: str, pairs: list[PairOverlap]) -> OverlapAnswer:
    return OverlapAnswer(a=a, b=b, levels=[PairAnswer(**asdict(p), n_shared=p.n_shared) for p in pairs])


def consensus_answer(ids: list[str], levels: list[Consensus]) -> ConsensusAnswer:
    return ConsensusAnswer(ids=ids, levels=[ConsensusLevel(**asdict(c)) for c in levels])


def matrix_answer(m: Matrix) -> MatrixAnswer:
    return MatrixAnswer(**asdict(m))
