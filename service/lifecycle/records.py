"""A store's records as a stream of documents, and the inventory that says two stores hold the same ones.

Listings page newest first, so records written while a stream runs may be seen twice (the stream drops the
repeat) or not at all (the inventory taken after a copy reports them as not copied).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from circat.service.circuit import Circuit
from circat.service.progress import Progress, silent
from circat.service.stability import StabilityRecord
from circat.service.stores.base import (
    EVALUATION_FIELDS,
    CircuitFilter,
    CircuitStore,
    EvaluationFilter,
    EvaluationRecord,
)

PAGE = 500
T = TypeVar("T")


class Part(StrEnum):
    """What a copy, dump or restore moves. Model registrations travel with their circuits."""

    CIRCUITS = "circuits"
    EVALUATIONS = "evaluations"
    STABILITY = "stability"


ALL_PARTS = tuple(Part)


def _paged(page: Callable[[int], list[T]], key: Callable[[T], str]) -> Iterator[T]:
    """Every item of a newest-first listing read ``PAGE`` at a time from ``page(offset)``, each once."""
    seen: set[str] = set()
    offset = 0
    while True:
        rows = page(offset)
        for r in rows:
            if key(r) not in seen:
                seen.add(key(r))
                yield r
        if len(rows) < PAGE:
            return
        offset += PAGE


def circuit_ids(store: CircuitStore) -> Iterator[tuple[str, str]]:
    """Every stored circuit's (id, model), each once."""
    rows = _paged(lambda o: store.summaries(CircuitFilter(), limit=PAGE, offset=o)[0], lambda r: r.id)
    return ((r.id, r.model) for r in rows)


def evaluations(store: CircuitStore) -> Iterator[EvaluationRecord]:
    """Every stored evaluation, each once."""
    return _paged(lambda o: store.evaluations(EvaluationFilter(), limit=PAGE, offset=o)[0], lambda r: r.id)


def stabilities(store: CircuitStore) -> Iterator[StabilityRecord]:
    """Every stored stability summary, each once."""
    return _paged(lambda o: store.stabilities(limit=PAGE, offset=o)[0], lambda r: r.id)


def evaluation_doc(r: EvaluationRecord) -> dict[str, Any]:
    """An evaluation as an archive line."""
    return {"id": r.id, **{f: getattr(r, f) for f in EVALUATION_FIELDS}, "circuits": list(r.circuits),
            "created_at": r.created_at.astimezone(UTC).isoformat()}


def evaluation_of(doc: dict[str, Any]) -> EvaluationRecord:
    """An evaluation from its archive line (``low``/``high`` may be absent: written before intervals)."""
    fields = {f: doc[f] for f in EVALUATION_FIELDS if f in doc}
    record = EvaluationRecord(**fields, circuits=tuple(doc["circuits"]),
                              created_at=datetime.fromisoformat(doc["created_at"]))
    if doc.get("id", record.id) != record.id:
        raise ValueError(f"evaluation {doc['id']!r} does not match its content (id {record.id!r})")
    return record


def stability_doc(r: StabilityRecord) -> dict[str, Any]:
    """A stability summary as an archive line."""
    return {"id": r.id, "model": r.model, "task": r.task, "method": r.method, "spec": r.spec,
            "seeds": list(r.seeds), "summary": r.summary_json(), "created_at": r.created_at.astimezone(UTC).isoformat()}


def stability_of(doc: dict[str, Any]) -> StabilityRecord:
    """A stability summary from its archive line."""
    record = StabilityRecord.from_stored(doc["model"], doc["task"], doc["method"], doc["spec"], doc["seeds"],
                                         doc["summary"], datetime.fromisoformat(doc["created_at"]))
    if doc.get("id", record.id) != record.id:
        raise ValueError(f"stability summary {doc['id']!r} does not match its content (id {record.id!r})")
    return record


def _stamp(t: datetime) -> str:
    """A creation time to the millisecond, in UTC (what every store keeps exactly)."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds")


@dataclass
class ModelInventory:
    """What a store holds of one model: its shape, its records' counts and one checksum over their content."""

    shape: dict[str, Any]
    circuits: int = 0
    evaluations: int = 0
    stability: int = 0
    records: dict[tuple[Part, str], str] = field(default_factory=dict, repr=False)
    """(part, id) -> the record's line: a circuit's id recomputed from the content read back and its creation
    time, an evaluation's or summary's whole document"""

    @property
    def checksum(self) -> str:
        """sha256 over the sorted lines of the records."""
        return hashlib.sha256("\n".join(sorted(self.records.values())).encode()).hexdigest()

    def ids(self, part: Part) -> set[str]:
        """The ids of one part's records."""
        return {i for p, i in self.records if p is part}

    def view(self) -> dict[str, Any]:
        return {"shape": self.shape, "circuits": self.circuits, "evaluations": self.evaluations,
                "stability": self.stability, "checksum": self.checksum}


def circuit_line(c: Circuit) -> str:
    """A circuit's inventory line: its content id (recomputed) and creation time."""
    return f"c {c.id} {_stamp(c.provenance.created_at)}"


def inventory(store: CircuitStore, parts: Sequence[Part] = ALL_PARTS,
              progress: Progress = silent) -> dict[str, ModelInventory]:
    """Per model, what ``store`` holds of ``parts``: counts and a content checksum (every circuit is read back)."""
    out: dict[str, ModelInventory] = {}

    def of(model: str) -> ModelInventory:
        if model not in out:
            shape = store.model_shape(model)
            out[model] = ModelInventory(shape.__dict__ if shape else {})
        return out[model]

    for n, (cid, model) in enumerate(circuit_ids(store) if Part.CIRCUITS in parts else (), 1):
        inv = of(model)
        inv.circuits += 1
        inv.records[Part.CIRCUITS, cid] = circuit_line(store.get(cid))
        if n % 50 == 0:
            progress(n, None, "verifying circuits")
    for r in evaluations(store) if Part.EVALUATIONS in parts else ():
        inv = of(r.model)
        inv.evaluations += 1
        inv.records[Part.EVALUATIONS, r.id] = json.dumps(evaluation_doc(r) | {"created_at": _stamp(r.created_at)},
                                                         sort_keys=True)
    for s in stabilities(store) if Part.STABILITY in parts else ():
        inv = of(s.model)
        inv.stability += 1
        inv.records[Part.STABILITY, s.id] = json.dumps(stability_doc(s) | {"created_at": _stamp(s.created_at)},
                                                       sort_keys=True)
    return out
