"""``circat evaluate`` and ``circat transfer``: circuits or expressions evaluated on any task of a model, kept or
knocked out; each evaluation is stored in the catalogue as a record of its own (``circat evaluations`` lists them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from circat.service.bootstrap import DEFAULT_BOOTSTRAP, with_interval
from circat.service.cli.main import JsonOpt, StoreOpt, app, catalogue, write_report
from circat.service.cli.output import console, emit_json, fail, table
from circat.service.effects import EffectsView
from circat.service.errors import CatalogueError
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.jobs.spec import problems_of
from circat.service.progress import console_progress
from circat.service.stores import CircuitFilter
from circat.service.types import Ablation, Level, Mode
from circat.workers import spec_options as opts

SubmitOpt = Annotated[bool, typer.Option("--submit", help="queue it as a job instead of running it here")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="with --submit: wait for the job, with a progress bar")]
ExpressionArg = Annotated[list[str], typer.Argument(
    help="circuit ids or expressions (A & B, A | B, A - B, shared(A, B, C; 2), heads(L0-L8), a9.h1,m9, ...); "
         "@FILE reads a list of components and edges")]


def expression_text(arg: str) -> str:
    """An expression argument: ``@FILE`` becomes the file's items (one per line or comma-separated), joined."""
    if not arg.startswith("@"):
        return arg
    path = Path(arg[1:])
    if not path.is_file():
        raise ValueError(f"expression file not found: {path}")
    items = [i.strip() for line in path.read_text().splitlines() for i in line.split(",") if i.strip()]
    if not items:
        raise ValueError(f"expression file {path} lists no components or edges")
    return ",".join(items)


@app.command()
def evaluate(
    expressions: ExpressionArg,
    model: opts.ModelOpt,
    task: Annotated[str, typer.Option(help="a registered task")],
    mode: Annotated[Mode, typer.Option(help="keep: the circuit alone (faithfulness); knockout: the model without "
                                            "it (the share of the behaviour left)")] = Mode.KEEP,
    metric: opts.MetricOpt = None,
    ablation: opts.AblationOpt = Ablation.RESAMPLE,
    per_position: opts.PerPositionOpt = False,
    level: Annotated[Level | None, typer.Option(help="node or edge (default: node when any operand has no edges)")]
    = None,
    n: opts.NOpt = 64,
    seed: opts.SeedOpt = 0,
    bootstrap: Annotated[int, typer.Option(min=0, max=10_000, help="resamples of the prompts for each value's 95 % "
                                                                  "interval (0: none; no extra forward pass)")]
    = DEFAULT_BOOTSTRAP,
    dtype: opts.DtypeOpt = "float32",
    device: opts.DeviceOpt = None,
    save: Annotated[bool, typer.Option("--save", help="store each expression's circuit in the catalogue (method "
                                                       "expression; --store names the catalogue)")]
    = False,
    components: Annotated[bool, typer.Option("--components", help="one expression: each component removed alone, "
                                                                  "each other added alone, the layer sweeps")]
    = False,
    report_out: Annotated[Path | None, typer.Option(help="with --components: write the HTML report of the "
                                                         "expression's circuits and the effects here")] = None,
    submit: SubmitOpt = False,
    wait: WaitOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate circuits or expressions on TASK of MODEL: faithfulness (keep) or what is left without them."""
    from circat.workers.jobs.cli import need_worker

    need_worker(as_json)
    from circat.workers.evaluation import EvaluateError, run_evaluation, store_evaluation

    spec = _spec(expressions, model, task, as_json, mode=mode, metric=metric, ablation=ablation,
                 per_position=per_position, level=level, n=n, seed=seed, bootstrap=bootstrap, dtype=dtype)
    if submit:
        _submitted(spec, wait, as_json)
        return
    if components:
        _components(spec, store, device, as_json, report_out)
        return
    with catalogue(store, as_json) as cat:
        try:
            with console_progress(f"evaluating on {task}", enabled=not as_json) as progress:
                run = run_evaluation(spec, cat, device, progress)
            records, ids = store_evaluation(cat, run, save)
            recorded = [r.id for r in records]
        except (EvaluateError, CatalogueError, ValueError) as exc:
            fail(exc, as_json)
    _print(run, recorded, ids, as_json)


def _spec(expressions: list[str], model: str, task: str, as_json: bool, **options: Any) -> EvaluationSpec:
    try:
        return EvaluationSpec(expressions=tuple(expression_text(e) for e in expressions), model=model, task=task,
                              **options)
    except ValidationError as exc:
        fail(ValueError(problems_of(exc)), as_json)
    except ValueError as exc:
        fail(exc, as_json)


def _submitted(spec: EvaluationSpec, wait: bool, as_json: bool) -> None:
    """Queue ``spec`` as a job (through the API when ``CIRCAT_API_URL`` is set); print its id, or wait for it."""
    from circat.service.jobs.client import job_client
    from circat.workers.jobs.cli import wait_for

    try:
        job = job_client().submit(spec)
    except (CatalogueError, ValueError, OSError) as exc:
        fail(exc, as_json)
    if not wait:
        emit_json(job) if as_json else console.print(job["id"])
        return
    (result,) = wait_for([job["id"]], as_json)
    if as_json:
        emit_json(result)
    else:
        console.print(f"{result['id']}: {result['status']}; evaluations {', '.join(result['evaluation_ids']) or '-'}; "
                      f"circuits {', '.join(result['circuit_ids']) or '-'}")
    if result["status"] != "succeeded":
        raise typer.Exit(1)


def _components(spec: EvaluationSpec, store: str | None, device: str | None, as_json: bool,
                report_out: Path | None) -> None:
    from circat.workers.evaluation import EvaluateError, run_components

    with catalogue(store, as_json) as cat:
        try:
            with console_progress(f"components on {spec.task}", enabled=not as_json) as progress:
                ready, effects = run_components(spec, cat, device, progress)
            selection = ready.selections[0]
            view = EffectsView(selection.text, ready.model, spec.task or "", ready.metric, effects)
            report = None if report_out is None else write_report(
                cat, cat.select(list(selection.operands), CircuitFilter()) if selection.operands else [],
                report_out, as_json, effects=[view])
        except (EvaluateError, CatalogueError, ValueError) as exc:
            fail(exc, as_json)
    if as_json:
        emit_json({"model": ready.model, "task": spec.task, "expression": ready.selections[0].text,
                   "metric": ready.metric, "n_prompts": ready.n_prompts, "report": report} | effects.__dict__)
        return
    console.print(f"{ready.selections[0].text} on {ready.model} / {spec.task}: faithfulness {effects.base:.3f}")
    ranked = sorted(effects.removed.items(), key=lambda kv: -abs(kv[1]))
    table("each component removed alone (faithfulness lost)", ["component", "drop"], [list(kv) for kv in ranked])
    ranked = sorted(effects.added.items(), key=lambda kv: -abs(kv[1]))[:20]
    table("each other component added alone (faithfulness gained; top 20)", ["component", "gain"],
          [list(kv) for kv in ranked])
    table("whole layers of heads added", ["layer", "heads of L", "heads of 0..L"],
          [[layer, effects.layer_heads[layer], effects.heads_upto[layer]] for layer in effects.layer_heads])


@app.command()
def extend(
    expression: Annotated[str, typer.Argument(help="the circuit or expression to grow (@FILE: a list of items)")],
    model: opts.ModelOpt,
    task: Annotated[str, typer.Option(help="the task to grow it towards")],
    threshold: Annotated[float, typer.Option(min=0.01, max=1.0, help="the faithfulness to reach on TASK")] = 0.8,
    level: Annotated[Level, typer.Option(help="node: add components; edge: add edges (every operand needs edges)")]
    = Level.NODE,
    candidates: Annotated[int, typer.Option(min=0, help="edge level: the remaining edges with the largest |EAP "
                                                       "score| each step evaluates exactly (0: all)")] = 64,
    metric: opts.MetricOpt = None,
    ablation: opts.AblationOpt = Ablation.RESAMPLE,
    n: opts.NOpt = 64,
    seed: opts.SeedOpt = 0,
    device: opts.DeviceOpt = None,
    submit: SubmitOpt = False,
    wait: WaitOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grow a circuit greedily until it reaches THRESHOLD on TASK: each step adds the component (or, at edge level,
    the edge) with the largest gain (one batched pass over the candidates); the result is stored (method extend)."""
    from circat.workers.jobs.cli import need_worker

    need_worker(as_json)
    from circat.workers.evaluation import EvaluateError, run_extension

    spec = _spec([expression], model, task, as_json, kind="extend", metric=metric, ablation=ablation,
                 level=level, threshold=threshold, candidates=candidates if level is Level.EDGE else None, n=n,
                 seed=seed)
    if submit:
        _submitted(spec, wait, as_json)
        return
    with catalogue(store, as_json) as cat:
        try:
            with console_progress(f"extending on {task}", enabled=not as_json) as progress:
                ready, grown, circuit = run_extension(spec, cat, device, progress)
            cid = cat.add(circuit)
        except (EvaluateError, CatalogueError, ValueError) as exc:
            fail(exc, as_json)
    steps = [{"added": name, "faithfulness": f} for name, f in zip(["(start)", *grown.added], grown.faithfulness,
                                                                   strict=True)]
    if as_json:
        emit_json({"id": cid, "model": ready.model, "task": task, "expression": ready.selections[0].text,
                   "level": grown.level.value, "reached": grown.reached, "passes": grown.passes, "steps": steps})
        return
    table(f"{ready.selections[0].text} grown on {ready.model} / {task} towards {threshold:g}", ["added",
          "faithfulness"], [list(s.values()) for s in steps])
    console.print(f"{'reached' if grown.reached else 'did not reach'} {threshold:g}; stored as {cid}")


def _print(run: Any, recorded: list[str], ids: list[str], as_json: bool) -> None:
    rows = [{"evaluation": recorded[i], "expression": r.selection.text, "level": r.selection.level.value,
             "components": r.selection.n_components, "edges": r.selection.n_edges if r.selection.edge_mask is not None
             else None, "mode": r.mode.value, "value": r.value,
             "interval": None if r.interval is None else [r.interval.low, r.interval.high], "metric": r.metric,
             "full_metric": r.full, "empty_metric": r.empty} | ({"id": ids[i]} if ids else {})
            for i, r in enumerate(run.results)]
    if as_json:
        emit_json({"model": run.model, "task": run.spec.task, "metric": run.metric, "ablation": run.spec.ablation,
                   "n_prompts": run.n_prompts, "seed": run.spec.seed, "results": rows})
        return
    what = "faithfulness (kept alone)" if run.spec.mode is Mode.KEEP else "share left (knocked out)"
    for r in rows:
        r["value"] = with_interval(r["value"], r.pop("interval"))
    table(f"{run.model} / {run.spec.task}: {what} [95 % bootstrap interval], {run.metric}, "
          f"{run.spec.ablation.value} ablation, {run.n_prompts} prompts", list(rows[0]),
          [list(r.values()) for r in rows])
    console.print(f"full model {run.results[0].full:.4g}, empty {run.results[0].empty:.4g} ({run.metric})")


@app.command()
def transfer(
    model: opts.ModelOpt,
    tasks: Annotated[list[str] | None, typer.Option("--task", help="columns, repeatable (default: every registered "
                                                                  "task)")] = None,
    circuits: Annotated[list[str] | None, typer.Option("--circuit", help="rows: stored circuit ids, repeatable")]
    = None,
    expressions: Annotated[list[str] | None, typer.Option("--expression", help="more rows after the circuits: "
                                                                               "expressions, repeatable")] = None,
    method: Annotated[str | None, typer.Option(help="without --circuit: the model's stored circuits of this "
                                                    "method")] = None,
    mode: Annotated[Mode, typer.Option(help="keep (faithfulness) or knockout (share left)")] = Mode.KEEP,
    ablation: opts.AblationOpt = Ablation.RESAMPLE,
    n: opts.NOpt = 64,
    seed: opts.SeedOpt = 0,
    device: opts.DeviceOpt = None,
    submit: SubmitOpt = False,
    wait: WaitOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The transfer matrix of MODEL: circuits (rows; default: the model's stored circuits) and expressions
    evaluated on tasks (columns), each cell stored as an evaluation; a circuit on its own task is marked *."""
    from circat.workers.jobs.cli import need_worker

    need_worker(as_json)
    from circat.service.tasks import TASKS
    from circat.workers.evaluation import EvaluateError
    from circat.workers.models import ModelLoadError, load_model
    from circat.workers.transfer import transfer_matrix

    columns = tuple(tasks or TASKS)
    with catalogue(store, as_json) as cat:
        try:
            rows = list(circuits or [])
            if not rows:
                name = load_model(model, device).name
                rows = [s.id for s in cat.store.summaries(CircuitFilter(model=name, method=method),
                                                          cat.limits.max_ids)[0]]
            rows += [expression_text(e) for e in expressions or ()]
            if not rows:
                raise ValueError(f"no circuits of {model!r} stored{f' by {method}' if method else ''}: give "
                                 "--circuit or --expression")
            spec = EvaluationSpec(kind="transfer", expressions=tuple(rows), model=model, tasks=columns, mode=mode,
                                  ablation=ablation, n=n, seed=seed)
            if submit:
                _submitted(spec, wait, as_json)
                return
            with console_progress("transfer matrix", enabled=not as_json) as progress:
                matrix = transfer_matrix(spec, cat, device, progress)
        except ValidationError as exc:
            fail(ValueError(problems_of(exc)), as_json)
        except (EvaluateError, ModelLoadError, CatalogueError, ValueError) as exc:
            fail(exc, as_json)
    if as_json:
        emit_json({"model": matrix.model, "mode": matrix.mode, "tasks": list(matrix.tasks),
                   "rows": [r.__dict__ for r in matrix.rows]})
        return
    what = "faithfulness (kept alone)" if mode is Mode.KEEP else "share left (knocked out)"
    table(f"Transfer matrix of {matrix.model}: {what}; * its own task", ["circuit", *matrix.tasks],
          [[r.expression, *(f"{r.values[t]:.2f}{'*' if t == r.own_task else ''}" for t in matrix.tasks)]
           for r in matrix.rows])
