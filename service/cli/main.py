"""``circat``: import, export, list and compare circuits; run the API; the demo."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from circat.service.catalogue import Catalogue
from circat.service.circuit import Circuit
from circat.service.cli.output import console, emit_json, fail, p_text, table
from circat.service.documents import (
    CircuitDocument,
    MibDocument,
    document_from_circuit,
    mib_from_circuit,
    mib_to_document,
)
from circat.service.effects import EffectsView
from circat.service.errors import CatalogueError, LimitExceeded
from circat.service.limits import Limits, env_name
from circat.service.models import KNOWN_SHAPES
from circat.service.null import DEFAULT_SAMPLES, NullSpec
from circat.service.progress import console_progress
from circat.service.report.diagram import DEFAULT_TOP_EDGES
from circat.service.report.page import report_html
from circat.service.stability import RunComparison
from circat.service.stores import CircuitFilter, open_store
from circat.service.stores.base import EvaluationFilter
from circat.service.types import Mode, NullModel

app = typer.Typer(help="Circuit Catalogue: discover, store and compare circuits of language models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]
StoreOpt = Annotated[str | None, typer.Option("--store", envvar="CIRCAT_STORE_URL",
                                              help="store URL (sqlite:///PATH or bolt://HOST:PORT)")]
NullOpt = Annotated[NullModel, typer.Option("--null", help="chance is: uniform (exact) or connected random circuits "
                                                        "of the same sizes (sampled, edge level)")]
SamplesOpt = Annotated[int, typer.Option(min=1, help="draws of a sampled null model")]
NullSeedOpt = Annotated[int, typer.Option("--null-seed", help="seed of a sampled null model")]


@contextmanager
def catalogue(store: str | None, as_json: bool) -> Iterator[Catalogue]:
    """Open the store; report catalogue and input errors cleanly."""
    try:
        with open_store(store) as s:
            yield Catalogue(s, Limits.from_env())
    except (CatalogueError, ValueError, OSError) as exc:
        fail(exc, as_json)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(exists=True, help="a circuit JSON file, or a folder of them")],
    model: Annotated[str | None, typer.Option(help="model name (MIB files; default: from the folder name)")] = None,
    task: Annotated[str | None, typer.Option(help="task name (MIB files; default: from the folder name)")] = None,
    method: Annotated[str, typer.Option(help="discovery method that made the file")] = "imported",
    task_family: Annotated[str | None, typer.Option()] = None,
    citation: Annotated[str | None, typer.Option()] = None,
    metric: Annotated[str | None, typer.Option()] = None,
    bulk: Annotated[bool, typer.Option("--bulk", help="store many circuits per transaction (each still "
                                       "whole or not at all; a bad one is refused alone)")] = False,
    per_transaction: Annotated[int, typer.Option(min=1, help="circuits per transaction with --bulk")] = 50,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import circuits: our format, an EAP-IG / MIB graph JSON, or a folder of them (``ioi_gpt2/``)."""
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    provenance = {"task_family": task_family, "citation": citation, "metric": metric}
    group = per_transaction if bulk else 1
    results: list[dict[str, Any]] = []
    with catalogue(store, as_json) as cat, console_progress("importing", len(files) > 1 and not as_json) as tick:
        for start in range(0, len(files), group):
            chunk = files[start:start + group]
            read = [_read_file(cat, f, model, task, method, provenance) for f in chunk]
            for f, outcome in zip(chunk, cat.add_batch(read, group), strict=True):
                if isinstance(outcome, Exception) and len(files) == 1:
                    raise outcome
                results.append({"file": str(f)} | ({"error": str(outcome)} if isinstance(outcome, Exception)
                                                   else {"id": outcome.id, "new": outcome.new}))
            tick(start + len(chunk), len(files), "files")
    failed = [r for r in results if "error" in r]
    if as_json:
        emit_json(results)
    else:
        for r in results:
            console.print(f"{r['file']}: " + (f"[red]{r['error']}[/red]" if "error" in r else r["id"]))
    if failed:
        raise typer.Exit(1)


def _read_file(cat: Catalogue, f: Path, model: str | None, task: str | None, method: str,
               provenance: dict[str, Any]) -> Circuit | Exception:
    """The validated circuit of one file, or why it was refused."""
    try:
        return cat.prepare(_document_of_file(cat, f, model, task, method, provenance))
    except (CatalogueError, ValueError) as exc:
        return exc


def _document_of_file(cat: Catalogue, f: Path, model: str | None, task: str | None, method: str,
                      provenance: dict[str, Any]) -> CircuitDocument:
    size = f.stat().st_size
    if size > cat.limits.max_body_bytes:
        raise LimitExceeded(env_name("max_body_bytes"), size, cat.limits.max_body_bytes, f"bytes in {f.name}")
    try:
        raw = json.loads(f.read_bytes())
    except (RecursionError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{f}: not a JSON document ({type(exc).__name__}: {exc})") from None
    if "cfg" not in raw:
        return CircuitDocument.model_validate(raw)
    folder_task, _, folder_model = f.parent.name.rpartition("_")
    if folder_model in KNOWN_SHAPES and folder_task:
        model, task = model or folder_model, task or folder_task
    if not (model and task):
        raise ValueError(f"{f}: a MIB file needs --model and --task (or a MIB folder named TASK_MODEL)")
    params = {"source_file": f.name}
    return mib_to_document(MibDocument.model_validate(raw), model, task, method, params=params,
                           **{k: v for k, v in provenance.items() if v is not None})


@app.command()
def export(
    circuit_id: str,
    out: Annotated[Path | None, typer.Option(help="write here instead of stdout")] = None,
    format: Annotated[str, typer.Option(help="mib (EAP-IG/MIB graph JSON) or circat")] = "mib",
    store: StoreOpt = None,
) -> None:
    """Export one circuit as MIB graph JSON (default) or our circuit format."""
    if format not in ("mib", "circat"):
        fail(ValueError(f"--format must be mib or circat, not {format!r}"), False)
    with catalogue(store, False) as cat:
        c = cat.get(circuit_id)
        body = mib_from_circuit(c) if format == "mib" else document_from_circuit(c).model_dump(
            mode="json", exclude_none=True)
    text = json.dumps(body, indent=1)
    if out:
        out.write_text(text + "\n")
        console.print(f"wrote {out}")
    else:
        print(text)


@app.command("list")
def list_(
    model: str | None = None, task: str | None = None, family: str | None = None, method: str | None = None,
    min_faithfulness: float | None = None, limit: int = 50, offset: int = 0,
    store: StoreOpt = None, as_json: JsonOpt = False,
) -> None:
    """List circuits, newest first, with filters."""
    with catalogue(store, as_json) as cat:
        items, total = cat.store.summaries(CircuitFilter(model, task, family, method, min_faithfulness), limit, offset)
    if as_json:
        emit_json({"items": items, "total": total})
        return
    table(f"{total} circuit(s)", ["id", "model", "task", "method", "nodes", "edges", "faithfulness"],
          [[s.id, s.model, s.task, s.method, s.n_nodes, s.n_edges if s.has_edges else None, s.faithfulness]
           for s in items])


@app.command()
def evaluations(
    circuit: Annotated[str | None, typer.Option(help="only evaluations that read this circuit")] = None,
    model: str | None = None, task: str | None = None,
    mode: Annotated[Mode | None, typer.Option(help="keep or knockout")] = None,
    min_value: float | None = None, limit: int = 50, offset: int = 0,
    store: StoreOpt = None, as_json: JsonOpt = False,
) -> None:
    """List stored evaluations (``circat evaluate``), newest first, with filters."""
    flt = EvaluationFilter(circuit, model, task, mode.value if mode else None, min_value)
    with catalogue(store, as_json) as cat:
        items, total = cat.evaluations(flt, limit, offset)
    if as_json:
        emit_json({"items": [r.view() for r in items], "total": total})
        return
    table(f"{total} evaluation(s)", ["id", "model", "task", "expression", "mode", "level", "value", "metric"],
          [[r.id, r.model, r.task, r.expression, r.mode, r.level, r.value, r.metric] for r in items])


@app.command()
def overlap(a: str, b: str, null: NullOpt = NullModel.UNIFORM, samples: SamplesOpt = DEFAULT_SAMPLES,
            null_seed: NullSeedOpt = 0, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Shared items, Jaccard and containment of two circuits (node level, and edge level if both have edges),
    with what random circuits of the same sizes would share."""
    with catalogue(store, as_json) as cat:
        pairs = cat.overlap(a, b, NullSpec(null, samples, null_seed))
    if as_json:
        emit_json([{**p.__dict__, "n_shared": p.n_shared} for p in pairs])
        return
    for p in pairs:
        table(f"{p.level.value} overlap of {a} and {b} (chance: {p.chance.null.value})",
              ["|A|", "|B|", "shared", "E[shared]", "jaccard", "E[jaccard]", "p", "A in B", "B in A"],
              [[p.size_a, p.size_b, p.n_shared, p.chance.expected_shared, p.jaccard, p.chance.expected_jaccard,
                p_text(p.chance.p, p.chance.samples), p.a_in_b, p.b_in_a]])
        console.print("shared: " + (", ".join(p.shared) if p.shared else "(none)"))
        if p.runs is not None:
            console.print(runs_line(p.runs))


def runs_line(c: RunComparison) -> str:
    """One line comparing the resampled runs of two circuits at a level."""
    verdict = "lower than within either run" if c.differ else "not clearly lower than within the runs"
    return (f"across runs: jaccard {c.between:.3f} [{c.low:.3f}, {c.high:.3f}] over {c.pairs} pairs; within "
            f"{c.within_a:.3f} and {c.within_b:.3f}: {verdict} (permutation p = {p_text(c.p)})")


@app.command()
def shared(
    ids: Annotated[list[str], typer.Argument(help="two or more circuit ids")],
    min_support: Annotated[int | None, typer.Option(help="keep items in at least K circuits (default: all)")] = None,
    null: NullOpt = NullModel.UNIFORM, samples: SamplesOpt = DEFAULT_SAMPLES, null_seed: NullSeedOpt = 0,
    store: StoreOpt = None, as_json: JsonOpt = False,
) -> None:
    """The sub-circuit shared by several circuits, with support counts, and its size against chance's."""
    with catalogue(store, as_json) as cat:
        result = cat.consensus(ids, min_support, NullSpec(null, samples, null_seed))
    if as_json:
        emit_json(result)
        return
    for c in result:
        table(f"{c.level.value}s in >= {c.min_support} of {c.n_circuits} circuits", ["item", "support"],
              [[k, v] for k, v in c.support.items()])
        console.print(f"{len(c.support)} {c.level.value}(s); by chance ({c.chance.null.value}) "
                      f"{c.chance.expected_shared:.2f} expected, p = {p_text(c.chance.p, c.chance.samples)}")


@app.command()
def matrix(ids: Annotated[list[str], typer.Argument()], null: NullOpt = NullModel.UNIFORM,
           samples: SamplesOpt = DEFAULT_SAMPLES, null_seed: NullSeedOpt = 0, store: StoreOpt = None,
           as_json: JsonOpt = False) -> None:
    """Pairwise Jaccard matrix of circuits; each cell with chance's expected Jaccard and the tail probability."""
    with catalogue(store, as_json) as cat:
        m = cat.matrix(ids, NullSpec(null, samples, null_seed))
    if as_json:
        emit_json(m)
        return
    cells = [[i, *(f"{j:.3f} ({e:.3f}, p {p_text(p)})" for j, e, p in zip(row, exp, ps, strict=True))]
             for i, row, exp, ps in zip(m.ids, m.node, m.node_expected, m.node_p, strict=True)]
    table("node-level Jaccard (expected by chance, p)", ["", *m.ids], cells)


@app.command()
def report(
    ids: Annotated[list[str] | None, typer.Argument(help="circuit ids (default: the newest matching)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the HTML")] = Path("report.html"),
    model: str | None = None, task: str | None = None, family: str | None = None, method: str | None = None,
    min_faithfulness: float | None = None, limit: Annotated[int, typer.Option(help="circuits at most")] = 20,
    top_edges: Annotated[int, typer.Option(min=1, help="edges drawn per diagram")] = DEFAULT_TOP_EDGES,
    methods: Annotated[bool, typer.Option("--methods", help="add the methods leaderboard per model and task")]
    = False,
    store: StoreOpt = None, as_json: JsonOpt = False,
) -> None:
    """Write one self-contained HTML report: provenance, diagrams, overlap heatmaps, consensus, transfer
    matrices of stored evaluations, curves (and with --methods, the methods leaderboard)."""
    with catalogue(store, as_json) as cat:
        circuits = cat.select(ids or [], CircuitFilter(model, task, family, method, min_faithfulness), limit)
        if not circuits:
            fail(ValueError("no circuit matches: give ids or looser filters"), as_json)
        path = write_report(cat, circuits, out, as_json, top_edges, methods=methods)
    if as_json:
        emit_json({"path": path, "circuits": [c.id for c in circuits]})


def write_report(cat: Catalogue, circuits: list[Circuit], out: Path, as_json: bool,
                 top_edges: int = DEFAULT_TOP_EDGES, effects: Sequence[EffectsView] = (), methods: bool = False) -> str:
    """Write the HTML report of ``circuits`` (their stored evaluations, and the component ``effects`` given) to
    ``out`` and say where (unless ``as_json``); its path."""
    out.write_text(report_html(circuits, top_edges=top_edges, evaluations=cat.evaluations_of(circuits),
                               effects=effects, frequencies=cat.stabilities_of(circuits), methods=methods),
                   encoding="utf-8")
    if not as_json:
        console.print(f"report of {len(circuits)} circuit(s) written to {out}")
    return str(out)


@app.command()
def diff(a: str, b: str, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """What circuit A has that circuit B lacks."""
    with catalogue(store, as_json) as cat:
        d = cat.difference(a, b)
    if as_json:
        emit_json(d)
        return
    for level, items in d.items():
        console.print(f"{level.value}s only in {a}: " + (", ".join(items) if items else "(none)"))


@app.command()
def contains(model: str, item: str, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Which circuits of MODEL hold a node (``a9.h1``) or an edge (``a5.h5->a9.h1<v>``)."""
    with catalogue(store, as_json) as cat:
        level, ids = cat.containing(model, item)
    if as_json:
        emit_json({"model": model, "item": item, "level": level, "circuits": ids})
        return
    console.print(f"{item} ({level.value}) is in {len(ids)} circuit(s): " + ", ".join(ids))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    worker: Annotated[bool, typer.Option(help="run the embedded job worker beside the API (no broker set)")] = True,
    workers: Annotated[int, typer.Option(min=1, help="API processes (production: about one per core)")] = 1,
    store: StoreOpt = None,
) -> None:
    """Run the REST API (OpenAPI at /docs) and, without a broker, a job worker. Public addresses need a key."""
    import os
    import subprocess
    import sys

    import uvicorn

    from circat.service.api.app import create_app
    from circat.service.api.server import uvicorn_options
    from circat.service.config import Settings

    settings = Settings.from_env()
    if not _loopback(host) and not settings.write_keys:
        fail(ValueError(f"refusing to serve on {host} without CIRCAT_API_KEY: set a key or bind 127.0.0.1"), False)
    with catalogue(store, False) as cat:
        child = None
        if worker and not settings.broker_url:
            # its own process, so torch stays out of the API; it exits when this one does
            child = subprocess.Popen([sys.executable, "-m", "circat.workers", "worker", "--parent", str(os.getpid())])
        options = uvicorn_options(settings.limits)
        try:
            if workers == 1:
                uvicorn.run(create_app(cat.store, settings), host=host, port=port, **options)
            else:  # each process builds its own app (and store connections) from the environment
                if store:
                    os.environ["CIRCAT_STORE_URL"] = store
                uvicorn.run("circat.service.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                            **options)
        finally:
            if child is not None:
                child.terminate()
                child.wait(timeout=30)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
