"""``circat demo``: discovery jobs for the sequence, comparison and IOI tasks with two methods, then
the overlap report: per method the Jaccard matrix, the sub-circuit the sequence tasks share and
what greater-than and IOI share with it; per task, what every method's circuit keeps. Then the
functional answer: the transfer matrix (keep and knockout) of the first method's circuits and of the
shared sub-circuit over every task, and per task whether that sub-circuit carries it (keeps at least
half of it). On a model other than the toy, the tasks it is not competent at (held-out accuracy
below 0.6) are left out.

Specs are idempotent: a second run finds the finished jobs and only prints the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from circat.service.catalogue import Catalogue
from circat.service.cli.output import console, p_text, table
from circat.service.jobs.client import job_client
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.jobs.spec import DiscoverySpec
from circat.service.progress import console_progress
from circat.service.types import Method, Mode
from circat.workers.jobs.cli import wait_for
from circat.workers.models import TOY
from circat.workers.transfer import transfer_matrix

SEQUENCES = ("numerals", "number-words", "months")
TASKS = (*SEQUENCES, "greater-than", "ioi")
TOY_METHODS = (Method.ABLATION, Method.EAP_IG)
MODEL_METHODS = (Method.EAP, Method.EAP_IG)
"""a real model's default: node ablation tries each of its ~300 components in turn, too slow on a CPU"""
LEVEL = 0.8
CARRIES = 0.5
"""the share of a task the shared sub-circuit must keep to be said to carry it"""


@dataclass(frozen=True)
class DemoPlan:
    """Which tasks (those the model is competent at) and methods the demo runs, and what it left out."""

    model: str
    tasks: tuple[str, ...]
    methods: tuple[Method, ...]
    excluded: dict[str, float]
    """task -> held-out accuracy, for the tasks the model is not competent at"""

    @property
    def sequences(self) -> list[str]:
        """The sequence tasks the demo runs."""
        return [t for t in SEQUENCES if t in self.tasks]

    def specs(self, n: int) -> list[DiscoverySpec]:
        """One spec per task and method, each asking for the circuit at 80 % faithfulness."""
        return [DiscoverySpec(model=self.model, task=t, method=m, levels=(LEVEL,), n=n)
                for t in self.tasks for m in self.methods]


def plan(model: str, methods: Sequence[Method] | None = None, device: str | None = None,
         quiet: bool = False) -> DemoPlan:
    """The demo's tasks and methods for ``model``; a model other than the toy is first scored on
    every task (as ``circat tasks``: 512 held-out prompts, cached) and the tasks below the
    competence bar are left out."""
    chosen = tuple(methods or (TOY_METHODS if model == TOY else MODEL_METHODS))
    if len(chosen) < 2:
        raise ValueError("the demo compares methods: give at least two")
    if model == TOY:
        return DemoPlan(model, TASKS, chosen, {})
    from circat.workers.models import load_model
    from circat.workers.task_eval import model_scores
    from circat.workers.tasks import registered_tasks

    with console_progress(f"competence of {model}", enabled=not quiet) as progress:
        loaded = load_model(model, device, progress=progress)
        scores = model_scores(loaded, registered_tasks(), progress=progress)
    excluded = {s.task: s.accuracy for s in scores if s.task in TASKS and not s.competent}
    demo = DemoPlan(model, tuple(t for t in TASKS if t not in excluded), chosen, excluded)
    if len(demo.sequences) < 2:
        raise ValueError(f"{model} is competent at fewer than two sequence tasks: nothing to compare")
    return demo


def jobs_demo(cat: Catalogue, demo: DemoPlan, n: int, as_json: bool) -> dict[str, Any]:
    """Submit the demo's jobs, wait for them; the overlap report (printed unless ``as_json``)."""
    specs = demo.specs(n)
    client = job_client()
    submitted = [client.submit(s) for s in specs]
    finished = wait_for([j["id"] for j in submitted], as_json)
    circuits = {(s.task, s.method.value): j["circuit_ids"][0] for s, j in zip(specs, finished, strict=True)}
    report = overlap_report(cat, circuits, demo)
    report["jobs"] = {f"{s.task}/{s.method.value}": {"id": j["id"], "new": sub["new"]}
                      for s, j, sub in zip(specs, finished, submitted, strict=True)}
    report["function"] = function_report(cat, circuits, demo, n, as_json)
    if not as_json:
        _print(report, demo)
        _print_function(report["function"], demo)
    return report


def function_report(cat: Catalogue, circuits: dict[tuple[str, str], str], demo: DemoPlan, n: int,
                    quiet: bool = False) -> dict[str, Any]:
    """The transfer matrices (keep, knockout) of the first method's circuits and the sequence tasks' shared
    sub-circuit over every task, stored as evaluations; per task, whether the shared sub-circuit carries it."""
    method = demo.methods[0].value
    rows = [circuits[(t, method)] for t in demo.tasks]
    shared = f"shared({', '.join(circuits[(t, method)] for t in demo.sequences)}; {len(demo.sequences)})"
    out: dict[str, Any] = {"method": method}
    with console_progress("transfer matrices", enabled=not quiet) as progress:
        for mode in Mode:
            spec = EvaluationSpec(kind="transfer", expressions=(*rows, shared), model=demo.model, tasks=demo.tasks,
                                  mode=mode, n=n)
            matrix = transfer_matrix(spec, cat, progress=progress)
            out[mode.value] = [r.__dict__ for r in matrix.rows]
    kept = out[Mode.KEEP.value][-1]
    out["shared"] = kept["expression"]
    out["carries"] = {t: kept["values"][t] >= CARRIES for t in demo.tasks}
    return out


def _print_function(function: dict[str, Any], demo: DemoPlan) -> None:
    for mode, what in ((Mode.KEEP, "faithfulness, kept alone"), (Mode.KNOCKOUT, "share left, knocked out")):
        rows = function[mode.value]
        table(f"{function['method']} circuits on every task ({what}; * its own task; last row: the shared "
              "sub-circuit)", ["circuit", *demo.tasks],
              [[r["own_task"] or "shared", *(f"{r['values'][t]:.2f}{'*' if t == r['own_task'] else ''}"
                                              for t in demo.tasks)] for r in rows])
    kept = function[Mode.KEEP.value][-1]["values"]
    for t, carried in function["carries"].items():
        verdict = "carries it" if carried else "does not carry it"
        console.print(f"  {t}: the sub-circuit the sequence tasks share keeps {kept[t]:.2f} of it: {verdict} "
                      f"(at least {CARRIES:.0%})")


def overlap_report(cat: Catalogue, circuits: dict[tuple[str, str], str], demo: DemoPlan) -> dict[str, Any]:
    """The overlap questions over the demo's circuits, by method and by task."""
    others = [t for t in demo.tasks if t not in SEQUENCES]
    by_method: dict[str, Any] = {}
    for method in demo.methods:
        ids = {t: circuits[(t, method.value)] for t in demo.tasks}
        agreed = cat.consensus([ids[t] for t in demo.sequences])[0]
        shared = list(agreed.support)
        matrix = cat.matrix([ids[t] for t in demo.tasks])
        by_method[method.value] = {
            "jaccard": matrix.node,
            "jaccard_expected": matrix.node_expected,
            "jaccard_p": matrix.node_p,
            "edge_jaccard": matrix.edge,
            "sequences_share": shared,
            "sequences_share_by_chance": {"expected": agreed.chance.expected_shared, "p": agreed.chance.p,
                                          "samples": agreed.chance.samples},
            "with_shared": {t: sorted(set(shared) & set(cat.get(ids[t]).node_names)) for t in others},
        }
    across = {t: list(cat.consensus([circuits[(t, m.value)] for m in demo.methods])[0].support) for t in demo.tasks}
    faith = {f"{t}/{m}": cat.get(cid).provenance.faithfulness for (t, m), cid in circuits.items()}
    return {"model": demo.model, "tasks": list(demo.tasks), "not_competent": demo.excluded,
            "circuits": {f"{t}/{m}": c for (t, m), c in circuits.items()},
            "faithfulness": faith, "by_method": by_method, "every_method_keeps": across}


def _print(report: dict[str, Any], demo: DemoPlan) -> None:
    for task, acc in demo.excluded.items():
        console.print(f"[yellow]{task}: left out, {demo.model} is not competent at it "
                      f"(held-out accuracy {acc:.2f} < 0.6)[/yellow]")
    rows = [[k, c, report["faithfulness"][k], "new" if report["jobs"][k]["new"] else "reused"]
            for k, c in report["circuits"].items()]
    table(f"Circuits of {demo.model} at {LEVEL:.0%} (one job each)", ["task/method", "circuit", "faithfulness", "job"],
          rows)
    for method, r in report["by_method"].items():
        for level, key in (("node", "jaccard"), ("edge", "edge_jaccard")):
            if any(v is not None for row in r[key] for v in row):
                table(f"{method}: {level}-level Jaccard", ["", *demo.tasks],
                      [[t, *row] for t, row in zip(demo.tasks, r[key], strict=True)])
        chance = r["sequences_share_by_chance"]
        console.print(f"[bold]{method}: shared by {', '.join(demo.sequences)} ({len(r['sequences_share'])}):[/bold] "
                      + (", ".join(r["sequences_share"]) or "(none)"))
        console.print(f"  chance: circuits of these sizes drawn at random would share {chance['expected']:.2f} "
                      f"components (p = {p_text(chance['p'], chance['samples'])} for "
                      f"{len(r['sequences_share'])} or more)")
        for t, items in r["with_shared"].items():
            console.print(f"  {t} has of it: " + (", ".join(items) or "(none)"))
    table("Kept by every method", ["task", "components"],
          [[t, ", ".join(c) or "(none)"] for t, c in report["every_method_keeps"].items()])
