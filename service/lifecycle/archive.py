"""Dumps and restores: a whole catalogue as one versioned, self-describing, compressed archive.

The archive is a zip file (deflate): ``circuits.jsonl`` (circuit documents in the exchange format,
``schema/circuit.schema.json``), ``evaluations.jsonl`` and ``stability.jsonl`` (one record per line), and
``manifest.json`` naming the archive format, the catalogue schema version it was written with, and per member
its line count and sha256. A dump is written to a temporary file and renamed into place, so a killed dump
leaves no archive.

A restore checks everything before it stores anything: the format, the versions (a newer one is refused),
each member's count and checksum, and every line (a circuit validates against its shape and the target's
registrations and matches its id; an evaluation or summary names only circuits the archive or the target
holds). Only then does it store, in batches; a restore killed half-way leaves complete records only (each
batch is one transaction) and its rerun stores the rest, since every record is content-addressed.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from circat.service.circuit import Circuit
from circat.service.documents import CircuitDocument, circuit_from_document, document_from_circuit
from circat.service.errors import CatalogueError, CircuitInvalid, NotFound, SchemaMismatch
from circat.service.lifecycle.copy import BATCH
from circat.service.lifecycle.records import (
    ALL_PARTS,
    Part,
    circuit_ids,
    evaluation_doc,
    evaluation_of,
    evaluations,
    stabilities,
    stability_doc,
    stability_of,
)
from circat.service.progress import Progress, silent
from circat.service.stores.base import CircuitStore
from circat.service.stores.versions import CATALOGUE_SCHEMA

FORMAT = "circat.dump"
DUMP_VERSION = 1
"""1: the first archive format (members and manifest as described above)."""
MANIFEST = "manifest.json"


class ArchiveInvalid(CatalogueError, ValueError):
    """A dump that cannot be restored as it is (truncated, corrupted, not a dump); nothing was stored."""


@dataclass
class RestoreReport:
    """What a restore stored and what the target held already, by part."""

    stored: dict[str, int] = field(default_factory=lambda: {p.value: 0 for p in ALL_PARTS})
    present: dict[str, int] = field(default_factory=lambda: {p.value: 0 for p in ALL_PARTS})
    manifest: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {"stored": self.stored, "already_present": self.present,
                "schema_version": self.manifest.get("schema_version"), "counts": {
                    p: m["count"] for p, m in self.manifest.get("members", {}).items()}}


def member(part: Part) -> str:
    """The archive member holding one part."""
    return f"{part.value}.jsonl"


def dump(store: CircuitStore, path: Path, progress: Progress = silent) -> dict[str, Any]:
    """Write the whole catalogue to ``path``; the manifest. Streams: one record in memory at a time."""
    partial = path.with_name(path.name + ".partial")
    members: dict[str, dict[str, Any]] = {}
    sources: dict[Part, Callable[[], Iterator[dict[str, Any]]]] = {
        Part.CIRCUITS: lambda: (document_from_circuit(store.get(cid)).model_dump(mode="json", exclude_none=True)
                                for cid, _ in circuit_ids(store)),
        Part.EVALUATIONS: lambda: (evaluation_doc(r) for r in evaluations(store)),
        Part.STABILITY: lambda: (stability_doc(r) for r in stabilities(store)),
    }
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for part, docs in sources.items():
            with zf.open(member(part), "w") as f:
                members[member(part)] = _write_lines(f, docs(), lambda n, p=part: progress(n, None, f"dumping {p}"))
        manifest = {"format": FORMAT, "dump_version": DUMP_VERSION, "schema_version": CATALOGUE_SCHEMA,
                    "created_at": datetime.now(UTC).isoformat(), "models": _models(store), "members": members}
        zf.writestr(MANIFEST, json.dumps(manifest, indent=1))
    os.replace(partial, path)
    return manifest


def _write_lines(f: IO[bytes], docs: Iterator[dict[str, Any]], tick: Callable[[int], None]) -> dict[str, Any]:
    digest, count = hashlib.sha256(), 0
    for doc in docs:
        line = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
        f.write(line)
        digest.update(line)
        count += 1
        if count % BATCH == 0:
            tick(count)
    return {"count": count, "sha256": digest.hexdigest()}


def _models(store: CircuitStore) -> dict[str, dict[str, Any]]:
    return {m: shape.__dict__ for m in store.models() if (shape := store.model_shape(m)) is not None}


def restore(path: Path, store: CircuitStore, progress: Progress = silent) -> RestoreReport:
    """Load a dump into ``store`` (empty or not; records it holds are no-ops), after checking all of it."""
    try:
        with zipfile.ZipFile(path) as zf:
            manifest = _manifest(zf, path)
            _check(zf, manifest, store, progress)
            return _load(zf, manifest, store, progress)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ArchiveInvalid(f"{path} is not a readable dump (truncated or corrupted?): {exc}") from exc


def _manifest(zf: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(zf.read(MANIFEST))
    except KeyError as exc:
        raise ArchiveInvalid(f"{path} has no {MANIFEST}: not a circat dump") from exc
    except ValueError as exc:
        raise ArchiveInvalid(f"{path}: {MANIFEST} is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveInvalid(f"{path}: {MANIFEST} does not describe a circat dump (format {FORMAT!r})")
    for key, known in (("dump_version", DUMP_VERSION), ("schema_version", CATALOGUE_SCHEMA)):
        found = manifest.get(key)
        if not isinstance(found, int) or found < 0:
            raise ArchiveInvalid(f"{path}: {MANIFEST} has no valid {key}")
        if found > known:
            raise SchemaMismatch(f"dump {path} ({key})", found, known)
    members = manifest.get("members")
    if not isinstance(members, dict) or set(members) != {member(p) for p in ALL_PARTS}:
        raise ArchiveInvalid(f"{path}: {MANIFEST} must list the members {sorted(member(p) for p in ALL_PARTS)}")
    return manifest


def _lines(zf: zipfile.ZipFile, part: Part) -> Iterator[tuple[int, bytes]]:
    try:
        with zf.open(member(part)) as f:
            yield from enumerate(f, 1)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ArchiveInvalid(f"{member(part)} is corrupted: {exc}") from exc


def _check(zf: zipfile.ZipFile, manifest: dict[str, Any], store: CircuitStore, progress: Progress) -> None:
    """Every member's count and checksum, every line's content: ``ArchiveInvalid`` naming the first problem."""
    shapes = manifest["models"]
    dumped: set[str] = set()
    for part in ALL_PARTS:
        name, expected = member(part), manifest["members"][member(part)]
        digest, count = hashlib.sha256(), 0
        for count, line in _lines(zf, part):
            digest.update(line)
            try:
                record_id = _validate(part, line, store, shapes, dumped)
            except (ValueError, KeyError, TypeError, CircuitInvalid) as exc:
                raise ArchiveInvalid(f"{name} line {count}: {exc}") from exc
            if part is Part.CIRCUITS:
                dumped.add(record_id)
            if count % BATCH == 0:
                progress(count, expected["count"], f"checking {part.value}")
        if count != expected["count"] or digest.hexdigest() != expected["sha256"]:
            raise ArchiveInvalid(f"{name}: {count} lines with sha256 {digest.hexdigest()[:12]}..., the manifest "
                                 f"says {expected['count']} with {str(expected['sha256'])[:12]}...: "
                                 "the dump was altered or truncated")


def _validate(part: Part, line: bytes, store: CircuitStore, shapes: dict[str, Any], dumped: set[str]) -> str:
    """One line checked as the store would check it; its record's id."""
    if part is Part.CIRCUITS:
        circuit = _circuit(line, store, shapes)
        return circuit.id
    record = evaluation_of(json.loads(line)) if part is Part.EVALUATIONS else stability_of(json.loads(line))
    named = list(record.circuits)
    missing = [c for c in named if c not in dumped and not _held(store, c)]
    if missing:
        raise ValueError(f"{part.value} record {record.id} names circuits neither dumped nor stored: {missing[:3]}")
    return record.id


def _circuit(line: bytes, store: CircuitStore, shapes: dict[str, Any]) -> Circuit:
    try:
        doc = CircuitDocument.model_validate_json(line)
    except ValidationError as exc:
        raise ValueError(f"not a circuit document: {exc.errors()[0]['msg']}") from exc
    circuit = circuit_from_document(doc, lambda m: store.model_shape(m))
    if doc.id is not None and doc.id != circuit.id:
        raise ValueError(f"circuit {doc.id} does not match its content (id {circuit.id})")
    if doc.model in shapes and shapes[doc.model] != circuit.shape.__dict__:
        raise ValueError(f"circuit {doc.id} has a shape other than the manifest's for {doc.model!r}")
    return circuit


def _held(store: CircuitStore, circuit_id: str) -> bool:
    try:
        store.memberships([circuit_id])
    except NotFound:
        return False
    return True


def _load(zf: zipfile.ZipFile, manifest: dict[str, Any], store: CircuitStore, progress: Progress) -> RestoreReport:
    report = RestoreReport(manifest=manifest)
    writers: dict[Part, Callable[[list[Any]], list[Any]]] = {
        Part.CIRCUITS: store.write_many, Part.EVALUATIONS: store.put_evaluations,
        Part.STABILITY: lambda rs: [store.put_stability(r) for r in rs]}
    readers: dict[Part, Callable[[bytes], Any]] = {
        Part.CIRCUITS: lambda line: _circuit(line, store, manifest["models"]),
        Part.EVALUATIONS: lambda line: evaluation_of(json.loads(line)),
        Part.STABILITY: lambda line: stability_of(json.loads(line))}
    for part in ALL_PARTS:
        batch: list[Any] = []
        for n, line in _lines(zf, part):
            batch.append(readers[part](line))
            if len(batch) == BATCH or n == manifest["members"][member(part)]["count"]:
                for s in writers[part](batch):
                    (report.stored if s.new else report.present)[part.value] += 1
                batch.clear()
                progress(n, manifest["members"][member(part)]["count"], f"restoring {part.value}")
    return report
