"""``circat migrate``, ``copy``, ``dump`` and ``restore``: schema versions, and moving a catalogue between stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from circat.service.cli.main import JsonOpt, StoreOpt, app
from circat.service.cli.output import console, emit_json, fail, table
from circat.service.config import Settings
from circat.service.errors import CatalogueError
from circat.service.lifecycle.archive import dump as dump_catalogue
from circat.service.lifecycle.archive import restore as restore_catalogue
from circat.service.lifecycle.copy import CopyReport, copy_catalogue
from circat.service.lifecycle.records import ALL_PARTS, Part
from circat.service.progress import console_progress
from circat.service.stores import open_store

Errors = (CatalogueError, ValueError, OSError)


@app.command()
def migrate(
    store: StoreOpt = None,
    jobs: Annotated[str | None, typer.Option("--jobs", envvar="CIRCAT_DATABASE_URL",
                                             help="job database URL (sqlite:///PATH or postgresql://...)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Bring the catalogue and the job database to this circat's schema now, and say from which version (opening
    them does the same; a newer version is refused)."""
    from circat.service.jobs.schema import head
    from circat.service.jobs.store import JobStore
    from circat.service.stores.versions import CATALOGUE_SCHEMA

    settings = Settings.from_env()
    try:
        with open_store(store) as s:
            found = s.migrate()
        job_store = JobStore(jobs or settings.database_url)
        revision = job_store.migrated_from
        job_store.close()
    except Errors as exc:
        fail(exc, as_json)
    result = {"catalogue": {"from": found, "to": CATALOGUE_SCHEMA},
              "jobs": {"from": revision, "to": head()}}
    if as_json:
        emit_json(result)
        return
    before = "new" if found is None else f"schema {found}"
    console.print(f"catalogue: {before} -> schema {CATALOGUE_SCHEMA}; job database: revision {revision or 'none'} "
                  f"-> {head()}")


def _parts(what: str) -> tuple[Part, ...]:
    try:
        return tuple(Part(w.strip()) for w in what.split(",") if w.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{what!r}: name parts among {', '.join(p.value for p in ALL_PARTS)}") from exc


@app.command()
def copy(
    source: Annotated[str, typer.Option("--from", help="the store to copy (sqlite:///PATH or bolt://HOST:PORT)")],
    target: Annotated[str, typer.Option("--to", help="the store to copy into; what it holds already is kept")],
    what: Annotated[str, typer.Option(help="parts to copy, comma-separated")] = ",".join(ALL_PARTS),
    verify: Annotated[bool, typer.Option(help="read both sides back and compare counts and checksums per model")]
    = True,
    as_json: JsonOpt = False,
) -> None:
    """Copy a catalogue between two stores (SQLite to Neo4j, Neo4j to SQLite, ...): only what the target lacks, so
    a rerun completes a killed copy; then verify both sides model by model. Exits 1 when they differ."""
    parts = _parts(what)
    try:
        with open_store(source) as src, open_store(target) as dst, console_progress("copy", not as_json) as tick:
            report = copy_catalogue(src, dst, parts, tick, verify)
    except Errors as exc:
        fail(exc, as_json)
    emit_json(report.view()) if as_json else _print_copy(report, verify)
    if verify and not report.verified:
        raise typer.Exit(1)


def _print_copy(report: CopyReport, verified: bool) -> None:
    console.print("copied " + ", ".join(f"{n} {p}" for p, n in report.copied.items()) + "; already there: "
                  + ", ".join(f"{n} {p}" for p, n in report.present.items()))
    if not verified:
        return
    rows = [[m, f"{s.circuits}/{t.circuits if t else 0}", f"{s.evaluations}/{t.evaluations if t else 0}",
             f"{s.stability}/{t.stability if t else 0}", s.checksum[:12],
             t.checksum[:12] if t else "-", "yes" if t and s.view() == t.view() else "NO"]
            for m, s in sorted(report.source.items()) for t in [report.target.get(m)]]
    table("verification (source/target)", ["model", "circuits", "evaluations", "stability", "source checksum",
                                           "target checksum", "same"], rows)
    for part, ids in report.not_copied.items():
        console.print(f"not copied ({part}, written or deleted during the copy?): {', '.join(ids[:10])}"
                      + (f" and {len(ids) - 10} more" if len(ids) > 10 else ""))
    console.print("verified: the target holds the same records" if report.verified else "NOT verified")


@app.command()
def dump(
    file: Annotated[Path, typer.Argument(help="the archive to write (e.g. catalogue.circat.zip)")],
    store: StoreOpt = None, as_json: JsonOpt = False,
) -> None:
    """Write the whole catalogue to one versioned, compressed archive: circuits, evaluations and stability
    summaries as JSON Lines, and a manifest with the schema version, counts and checksums."""
    try:
        with open_store(store) as s, console_progress("dump", not as_json) as tick:
            manifest = dump_catalogue(s, file, tick)
    except Errors as exc:
        fail(exc, as_json)
    if as_json:
        emit_json(manifest)
        return
    counts = ", ".join(f"{m['count']} {name.removesuffix('.jsonl')}" for name, m in manifest["members"].items())
    console.print(f"wrote {file} ({file.stat().st_size:,} bytes): {counts}; schema {manifest['schema_version']}")


@app.command()
def restore(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="an archive of circat dump")],
    to: Annotated[str | None, typer.Option("--to", envvar="CIRCAT_STORE_URL",
                                           help="the store to load it into (empty or not)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Load a dump into a store, after checking all of it (versions, counts, checksums, every record); records the
    store holds already are kept as they are."""
    try:
        with open_store(to) as s, console_progress("restore", not as_json) as tick:
            report = restore_catalogue(file, s, tick)
    except Errors as exc:
        fail(exc, as_json)
    if as_json:
        emit_json(report.view())
        return
    console.print("restored " + ", ".join(f"{n} {p}" for p, n in report.stored.items()) + "; already there: "
                  + ", ".join(f"{n} {p}" for p, n in report.present.items()))
