"""The ``circat`` console script: the catalogue commands plus the worker commands.

Worker commands import torch and the engine only when they run, so ``circat serve`` and the
catalogue commands stay light; without the ``[worker]`` extra they say what to install.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from circat.service.annotations import faithfulness_interval
from circat.service.bootstrap import with_interval
from circat.service.cli import lifecycle  # noqa: F401  (registers migrate, copy, dump, restore)
from circat.service.cli.main import JsonOpt, StoreOpt, app, catalogue, write_report
from circat.service.cli.output import console, emit_json, fail, table
from circat.service.cli.stability import print_stability
from circat.service.errors import CatalogueError
from circat.service.progress import console_progress
from circat.service.stability import level_key
from circat.service.stores import CircuitFilter
from circat.service.tasks import task_rows
from circat.service.types import Method
from circat.workers import evaluate_cli  # noqa: F401  (registers evaluate)
from circat.workers import spec_options as opts
from circat.workers.jobs.cli import need_worker  # also registers submit, jobs, wait, cancel, worker
from circat.workers.model_cli import models_app

app.add_typer(models_app, name="models")

DeviceOpt = opts.DeviceOpt


@app.command()
def tasks(
    model: Annotated[str | None, typer.Option(help="score each task on this model (toy, built-in, hub, dir)")] = None,
    n: Annotated[int, typer.Option(min=1, help="held-out prompts per task")] = 512,
    seed: int = 1,
    device: DeviceOpt = None,
    dtype: opts.DtypeOpt = "float32",
    as_json: JsonOpt = False,
) -> None:
    """List the registered tasks; with --model, each task's top-1 accuracy and logit difference."""
    if model is None:
        rows = task_rows()
        if as_json:
            emit_json(rows)
        else:
            table("Tasks", ["task", "family", "metric", "description"], [list(r.values()) for r in rows])
        return
    need_worker(as_json)
    from circat.workers.models import ModelLoadError, load_model
    from circat.workers.task_eval import model_scores
    from circat.workers.tasks import registered_tasks
    from circat.workers.tasks.encode import TokenizationError

    try:
        with console_progress(f"scoring {model}", enabled=not as_json) as progress:
            loaded = load_model(opts.model_argument(model), device, dtype, progress)
            scores = model_scores(loaded, registered_tasks(), n=n, seed=seed, progress=progress)
    except (ModelLoadError, TokenizationError) as exc:
        fail(exc, as_json)
    _print_scores(f"Held-out performance of {model} ({n} prompts per task)", scores, as_json)


def _print_scores(title: str, scores: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json(scores)
        return
    table(title, ["task", "family", "top-1 accuracy", "logit diff", "prob diff", "competent"],
          [[s.task, s.family, s.accuracy, s.logit_diff, s.prob_diff, "yes" if s.competent else "no"] for s in scores])


@app.command("train-toy")
def train_toy(
    out: Annotated[Path | None, typer.Option(help="output directory (default: the shipped toy model)")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="training steps (default: the shipped recipe)")] = None,
    layers: Annotated[int | None, typer.Option(min=1, help="layers (default 4)")] = None,
    heads: Annotated[int | None, typer.Option(min=1, help="attention heads per layer (default 4)")] = None,
    d_model: Annotated[int | None, typer.Option(min=1, help="residual width, a multiple of --heads; "
                                                "the MLP is 4x wider (default 128)")] = None,
    batch_per_task: Annotated[int | None, typer.Option(min=1, help="prompts per task in a step (default 32)")] = None,
    lr: Annotated[float | None, typer.Option(min=0, help="peak learning rate (default 1e-3)")] = None,
    seed: int = 0,
    as_json: JsonOpt = False,
) -> None:
    """Retrain the toy model on every registered task and save it as a Hugging Face directory
    (other shapes, for benchmarks on larger graphs, with --layers, --heads and --d-model)."""
    need_worker(as_json)
    from dataclasses import replace

    from circat.workers.models import TOY_DIR
    from circat.workers.toy.train import ACCURACY_BAR, ToyConfig, train_toy

    given = {"steps": steps, "n_layer": layers, "n_head": heads, "batch_per_task": batch_per_task, "lr": lr}
    given |= {"n_embd": d_model, "n_inner": 4 * d_model} if d_model else {}
    cfg = replace(ToyConfig(seed=seed), **{k: v for k, v in given.items() if v is not None})
    if cfg.n_embd % cfg.n_head:
        fail(ValueError(f"--d-model {cfg.n_embd} is not a multiple of --heads {cfg.n_head}"), as_json)
    report = train_toy(out or TOY_DIR, cfg, progress=not as_json)
    if as_json:
        emit_json({"out": str(out or TOY_DIR), "seconds": report.seconds, "meets_bar": report.meets_bar,
                   "scores": report.scores})
    else:
        _print_scores(f"Toy model, held-out performance ({report.seconds:.0f} s of training)", report.scores, False)
        console.print(f"saved to {out or TOY_DIR}")
    if not report.meets_bar:
        fail(RuntimeError(f"the toy model missed the {ACCURACY_BAR:.0%} top-1 bar on some task"), as_json)


@app.command()
@opts.spec_command
def discover(
    model: opts.ModelOpt, task: opts.TaskOpt, method: opts.MethodOpt, options: dict[str, Any],
    device: DeviceOpt = None,
    out: Annotated[Path | None, typer.Option(help="write the run's MIB graph JSON here")] = None,
    paths_out: Annotated[Path | None, typer.Option(help="ipe: write the paths found (JSON) here")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Discover circuits of MODEL on TASK, store them in the catalogue, and print their faithfulness."""
    need_worker(as_json)
    from circat.workers.discover import DiscoverError, run_resampled, store_run

    try:
        spec = opts.make_spec(model, task, method, options)
        if paths_out is not None and method not in (Method.IPE, Method.IPE_APPROX):
            raise ValueError("--paths-out applies to ipe and ipe-approx")
        with console_progress(f"{spec.method.value} {spec.task}", enabled=not as_json) as progress:
            done = run_resampled(spec, device, progress)
    except (DiscoverError, ValueError) as exc:
        fail(exc, as_json)
    with catalogue(store, as_json) as cat:
        ids = store_run(cat, done)
    run = done.runs[0]
    if out is not None:
        from circat.service.documents import mib_from_circuit

        out.write_text(json.dumps(mib_from_circuit(run.circuits[0]), indent=1) + "\n")
    if paths_out is not None:
        paths_out.write_text(json.dumps(run.circuits[0].annotations["paths"], indent=1) + "\n")
    _print_run(done, ids, as_json)


def _print_run(done: Any, ids: list[str], as_json: bool) -> None:
    run = done.runs[0]
    rows = [{"id": i, "seed": c.provenance.params["seed"], "level": c.provenance.params.get("level"),
             "key": level_key(c.provenance.params),
             "faithfulness": c.provenance.faithfulness, "interval": faithfulness_interval(c.annotations),
             "nodes": c.n_nodes, "edges": c.n_edges if c.has_edges else None}
            for i, c in zip(ids, done.circuits, strict=True)]
    summary = {"full_metric": run.baselines.full, "empty_metric": run.baselines.empty,
               **{k: v for k, v in run.circuits[0].provenance.params.items() if k in ("cpr", "cmd")}}
    if as_json:
        emit_json({"spec": run.spec, "summary": summary, "circuits": rows,
                   **({"stability": done.stability.view()} if done.stability else {})})
        return
    table(f"{run.spec.method.value} on {run.spec.model} / {run.spec.task}",
          ["id", "seed", "level", "faithfulness", "heads+MLPs", "edges"],
          [[r["id"], r["seed"], r["key"], with_interval(r["faithfulness"], r["interval"]), r["nodes"], r["edges"]]
           for r in rows])
    console.print(" ".join(f"{k}={v:.4g}" for k, v in summary.items()))
    if done.stability is not None:
        print_stability(done.stability)


@app.command()
def demo(
    literature: Annotated[bool, typer.Option("--literature", help="only the published GPT-2 small circuits")] = False,
    model: Annotated[str, typer.Option(help="model of the discovery jobs (toy, built-in, hub, dir)")] = "toy",
    n: Annotated[int, typer.Option(min=1, help="prompts per job")] = 64,
    method: Annotated[list[Method] | None, typer.Option(
        help="methods to compare, repeatable (default: ablation and eap-ig on the toy, else eap and eap-ig)")] = None,
    device: DeviceOpt = None,
    report_out: Annotated[Path, typer.Option(help="the HTML report of the circuits shown")] = Path("circat-demo.html"),
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The literature circuits and what they share; then discovery jobs on MODEL and their overlap report.

    On a model other than the toy, each task is first scored on held-out prompts and the tasks
    it is not competent at (accuracy below 0.6) are left out."""
    from circat.service.cli.demo import literature_demo

    with catalogue(store, as_json) as cat:
        lit = literature_demo(cat, as_json)
        shown = list(lit["circuits"].values())
        if literature:
            lit["report"] = write_report(cat, cat.select(shown, CircuitFilter()), report_out, as_json)
            if as_json:
                emit_json(lit)
            return
        need_worker(as_json)
        from circat.workers.demo import jobs_demo, plan
        from circat.workers.models import ModelLoadError

        try:
            report = jobs_demo(cat, plan(model, method, device, quiet=as_json), n, as_json)
        except (CatalogueError, ModelLoadError, ValueError) as exc:
            fail(exc, as_json)
        shown += report["circuits"].values()
        report["report"] = write_report(cat, cat.select(shown, CircuitFilter()), report_out, as_json)
    if as_json:
        emit_json({"literature": lit, **report})


def main() -> None:
    app()
