"""The store interface every catalogue backend implements, and its small value types."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from circat.service.circuit import Circuit
from circat.service.errors import CircuitInvalid, shape_conflict
from circat.service.types import Level, ModelShape

if TYPE_CHECKING:
    from circat.service.stability import StabilityRecord


@dataclass(frozen=True)
class CircuitSummary:
    """A circuit's provenance and size, without its items."""

    id: str
    model: str
    task: str
    task_family: str | None
    method: str
    params: dict[str, Any]
    metric: str | None
    faithfulness: float | None
    citation: str | None
    created_at: datetime
    n_nodes: int
    n_edges: int
    has_edges: bool


@dataclass(frozen=True)
class CircuitFilter:
    """Filters for listing circuits; ``None`` means any."""

    model: str | None = None
    task: str | None = None
    task_family: str | None = None
    method: str | None = None
    min_faithfulness: float | None = None


@dataclass(frozen=True)
class EvaluationRecord:
    """A stored functional evaluation: an expression (a circuit id is one) on one model's task, kept or knocked out.

    Its id is a hash of what was evaluated and how (expression, model, task, mode, level, metric, ablation,
    prompts' count and seed), not of the numbers or the time: storing it again is a no-op.
    """

    model: str
    task: str
    expression: str
    circuits: tuple[str, ...]
    """the stored circuits the expression reads"""
    mode: str
    level: str
    metric: str
    ablation: str
    per_position: bool
    n_prompts: int
    seed: int
    value: float
    """faithfulness (keep) or the share of the behaviour left (knockout)"""
    metric_value: float
    full_metric: float
    empty_metric: float
    low: float | None = None
    """the 95 % bootstrap interval of ``value`` over prompts, when one was computed"""
    high: float | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def id(self) -> str:
        key = [self.model, self.task, self.expression, self.mode, self.level, self.metric, self.ablation,
               self.per_position, self.n_prompts, self.seed]
        return "e" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:23]

    def view(self) -> dict[str, Any]:
        """The record as the CLI and the API show it: every field and its id."""
        return asdict(self) | {"id": self.id}


EVALUATION_FIELDS = ("model", "task", "expression", "mode", "level", "metric", "ablation", "per_position",
                     "n_prompts", "seed", "value", "metric_value", "full_metric", "empty_metric", "low", "high")
"""The stored columns (properties) of an evaluation besides its id, circuits and time."""


@dataclass(frozen=True)
class EvaluationFilter:
    """Filters for listing evaluations; ``None`` means any."""

    circuit: str | None = None
    model: str | None = None
    task: str | None = None
    mode: str | None = None
    min_value: float | None = None


@dataclass(frozen=True)
class Stored:
    """A circuit a write handled: its id, and whether the write added it (``False``: it was already stored)."""

    id: str
    new: bool


@dataclass(frozen=True, eq=False)
class Membership:
    """The in-graph item indices of one circuit, for the overlap algebra."""

    id: str
    model: str
    shape: ModelShape
    nodes: np.ndarray
    edges: np.ndarray | None

    @staticmethod
    def of(circuit: Circuit) -> Membership:
        """The membership of a circuit in memory."""
        edges = None if circuit.edge_mask is None else np.flatnonzero(circuit.edge_mask)
        return Membership(circuit.id, circuit.provenance.model, circuit.shape, np.flatnonzero(circuit.node_mask),
                          edges)


class CircuitStore(ABC):
    """A catalogue of circuits. Writes are whole-or-nothing and idempotent by id."""

    @abstractmethod
    def write_many(self, circuits: Sequence[Circuit]) -> list[Stored]:
        """Store validated circuits in one transaction, all or none; per circuit, its id and whether it was
        new (an existing id, or a second copy in ``circuits``, is a no-op)."""

    def put_many(self, circuits: Sequence[Circuit]) -> list[str]:
        """Store validated circuits in one transaction, all or none; their ids (an existing id: no-op)."""
        return [s.id for s in self.write_many(circuits)]

    def put(self, circuit: Circuit) -> str:
        """Store one validated circuit in one transaction; return its id (existing id: no-op)."""
        return self.put_many([circuit])[0]

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version the store records (``service.stores.versions``)."""

    @abstractmethod
    def migrate(self) -> int | None:
        """Bring the store to the current schema now (its first use does too); the version it had (None: the
        store was empty)."""

    @abstractmethod
    def get(self, circuit_id: str) -> Circuit:
        """The circuit with this id; ``NotFound`` otherwise."""

    @abstractmethod
    def summaries(self, flt: CircuitFilter, limit: int = 50, offset: int = 0) -> tuple[list[CircuitSummary], int]:
        """One page of summaries (newest first, then id) and the total count."""

    @abstractmethod
    def put_evaluations(self, records: Sequence[EvaluationRecord]) -> list[Stored]:
        """Store evaluation records in one transaction; an existing id is a no-op. ``NotFound`` (nothing stored)
        when a record names a circuit the catalogue does not hold."""

    @abstractmethod
    def evaluations(self, flt: EvaluationFilter, limit: int = 50,
                    offset: int = 0) -> tuple[list[EvaluationRecord], int]:
        """One page of evaluations, newest first, and the total count."""

    @abstractmethod
    def put_stability(self, record: StabilityRecord) -> Stored:
        """Store a stability summary with links to its circuits in one transaction; an existing id is a no-op.
        ``NotFound`` (nothing stored) when it names a circuit the catalogue does not hold."""

    @abstractmethod
    def stabilities(self, circuit: str | None = None, limit: int = 50,
                    offset: int = 0) -> tuple[list[StabilityRecord], int]:
        """One page of stability summaries (those holding ``circuit``, if given), newest first, and the total."""

    @abstractmethod
    def stability(self, record_id: str) -> StabilityRecord:
        """The stability summary with this id; ``NotFound`` otherwise."""

    @abstractmethod
    def delete(self, circuit_id: str) -> None:
        """Remove a circuit and the evaluations and stability summaries that read it; ``NotFound`` when absent."""

    @abstractmethod
    def memberships(self, circuit_ids: list[str]) -> list[Membership]:
        """In-graph items of each circuit, in the order asked; ``NotFound`` names missing ids."""

    @abstractmethod
    def containing(self, model: str, index: int, level: Level) -> list[str]:
        """Ids of the circuits of ``model`` whose graph holds node/edge ``index``, sorted."""

    @abstractmethod
    def model_shape(self, model: str) -> ModelShape | None:
        """The shape a model is registered with, if any."""

    @abstractmethod
    def models(self) -> list[str]:
        """Names of the registered models."""

    @abstractmethod
    def ping(self) -> None:
        """Raise ``StoreUnavailable`` when the store cannot be reached."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> CircuitStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_registered(model: str, registered: ModelShape | None, shape: ModelShape) -> None:
    """Refuse a circuit whose model is registered with another shape (checked under the store's write lock)."""
    if problem := shape_conflict(model, registered, shape):
        raise CircuitInvalid([problem])


def pack_outside_scores(mask: np.ndarray | None, scores: np.ndarray | None) -> bytes | None:
    """Every score as little-endian float64 bytes when any lies outside the graph, else ``None``.

    Stores keep these beside their in-graph rows so importance files round-trip losslessly.
    """
    if mask is None or scores is None or not (~mask & ~np.isnan(scores)).any():
        return None
    return scores.astype("<f8").tobytes()


def rebuild(size: int, rows: Sequence[Sequence[Any]], packed: bytes | None) -> tuple[np.ndarray, np.ndarray]:
    """Mask and score vectors from stored in-graph ``(idx, score)`` rows and optional packed scores."""
    idx = np.array([r[0] for r in rows], dtype=np.int64)
    mask = np.zeros(size, dtype=bool)
    mask[idx] = True
    if packed is not None:
        return mask, np.frombuffer(bytes(packed), dtype="<f8").astype(np.float64)
    scores = np.full(size, np.nan)
    scores[idx] = [np.nan if r[1] is None else r[1] for r in rows]
    return mask, scores
