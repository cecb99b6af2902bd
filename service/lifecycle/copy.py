"""Copy a catalogue between any two stores (SQLite -> Neo4j, Neo4j -> SQLite, ...), then verify the copy.

Records are content-addressed, so a copy stores only what the target lacks: a rerun after a kill stores nothing
twice and completes what is missing. Circuits go through the stores' bulk path (``write_many``, a batch per
transaction); evaluations and stability summaries follow their circuits. The verification compares, per model,
both sides' counts and content checksums (``records.inventory``), and names what the source holds that the
target does not (records written to the source while the copy ran, or whose circuits were deleted meanwhile).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from circat.service.errors import NotFound
from circat.service.lifecycle.records import (
    ALL_PARTS,
    ModelInventory,
    Part,
    circuit_ids,
    evaluations,
    inventory,
    stabilities,
)
from circat.service.progress import Progress, silent
from circat.service.stability import StabilityRecord
from circat.service.stores.base import CircuitStore, EvaluationRecord

BATCH = 50


@dataclass
class CopyReport:
    """What a copy stored, what it could not, and the verification of both sides."""

    copied: dict[str, int] = field(default_factory=lambda: {p.value: 0 for p in ALL_PARTS})
    present: dict[str, int] = field(default_factory=lambda: {p.value: 0 for p in ALL_PARTS})
    """records the target held already (a rerun, or an existing catalogue)"""
    not_copied: dict[str, list[str]] = field(default_factory=dict)
    """ids the source holds and the target does not, by part"""
    source: dict[str, ModelInventory] = field(default_factory=dict)
    target: dict[str, ModelInventory] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        """Both sides hold the same records with the same content, model by model."""
        return not any(self.not_copied.values()) and {m: i.view() for m, i in self.source.items()} == {
            m: i.view() for m, i in self.target.items()}

    def view(self) -> dict[str, Any]:
        return {"copied": self.copied, "already_present": self.present, "not_copied": self.not_copied,
                "verified": self.verified,
                "models": {m: {"source": self.source[m].view(),
                               "target": self.target[m].view() if m in self.target else None}
                           for m in sorted(self.source)}}


def copy_catalogue(source: CircuitStore, target: CircuitStore, parts: Sequence[Part] = ALL_PARTS,
                   progress: Progress = silent, verify: bool = True) -> CopyReport:
    """Copy ``parts`` of ``source`` into ``target``, storing only what it lacks; then verify when asked."""
    report = CopyReport()
    if Part.CIRCUITS in parts:
        _copy_circuits(source, target, report, progress)
    if Part.EVALUATIONS in parts:
        held = {r.id for r in evaluations(target)}
        _put_each(target.put_evaluations, (r for r in evaluations(source) if not _seen(r.id, held, report,
                                                                                         Part.EVALUATIONS)),
                  report, Part.EVALUATIONS, progress)
    if Part.STABILITY in parts:
        held = {r.id for r in stabilities(target)}
        _put_each(lambda rs: [target.put_stability(r) for r in rs],
                  (r for r in stabilities(source) if not _seen(r.id, held, report, Part.STABILITY)),
                  report, Part.STABILITY, progress)
    if verify:
        _verify(source, target, parts, report, progress)
    return report


def _seen(rid: str, held: set[str], report: CopyReport, part: Part) -> bool:
    if rid in held:
        report.present[part.value] += 1
        return True
    return False


def _copy_circuits(source: CircuitStore, target: CircuitStore, report: CopyReport, progress: Progress) -> None:
    held = {cid for cid, _ in circuit_ids(target)}
    batch = []
    for cid, _ in circuit_ids(source):
        if _seen(cid, held, report, Part.CIRCUITS):
            continue
        try:
            batch.append(source.get(cid))
        except NotFound:  # deleted from the source since it was listed
            continue
        if len(batch) == BATCH:
            _write(target, batch, report, progress)
    _write(target, batch, report, progress)


def _write(target: CircuitStore, batch: list, report: CopyReport, progress: Progress) -> None:
    if batch:
        report.copied[Part.CIRCUITS.value] += sum(s.new for s in target.write_many(batch))
        batch.clear()
        progress(report.copied[Part.CIRCUITS.value], None, "copying circuits")


def _put_each(put: Any, records: Iterable[EvaluationRecord | StabilityRecord], report: CopyReport, part: Part,
              progress: Progress) -> None:
    """Store records in batches; a batch naming a circuit the target lacks is retried record by record, and the
    records that still fail are left for the verification to report."""
    batch: list = []
    for r in records:
        batch.append(r)
        if len(batch) == BATCH:
            _put_batch(put, batch, report, part, progress)
    _put_batch(put, batch, report, part, progress)


def _put_batch(put: Any, batch: list, report: CopyReport, part: Part, progress: Progress) -> None:
    if not batch:
        return
    try:
        report.copied[part.value] += sum(s.new for s in put(batch))
    except NotFound:
        for r in batch:
            try:
                report.copied[part.value] += sum(s.new for s in put([r]))
            except NotFound:
                continue
    batch.clear()
    progress(report.copied[part.value], None, f"copying {part.value}")


def _verify(source: CircuitStore, target: CircuitStore, parts: Sequence[Part], report: CopyReport,
            progress: Progress) -> None:
    """Inventories of both sides, and the ids of each part the source holds and the target lacks."""
    report.source = inventory(source, parts, progress)
    report.target = inventory(target, parts, progress)
    for part in parts:
        held = set().union(*(i.ids(part) for i in report.target.values()))
        missing = sorted(set().union(*(i.ids(part) for i in report.source.values())) - held)
        if missing:
            report.not_copied[part.value] = missing
