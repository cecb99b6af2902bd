"""``circat demo``: discovery jobs for the sequence, comparison and IOI tasks with two methods, then
the overlap report: per method the Jaccard matrix, the sub-circuit the sequence tasks share and
what greater-than and IOI share with it; per task, what every method's circuit keeps.

Specs are idempotent: a second run finds the finished jobs and only prints the report.
"""

from __future__ import annotations

from typing import Any

from service.catalogue import Catalogue
from service.cli.output import console, table
from service.jobs.client import job_client
from service.jobs.spec import DiscoverySpec
from service.types import Method
from workers.jobs.cli import wait_for

SEQUENCES = ("numerals", "number-words", "months")
TASKS = (*SEQUENCES, "greater-than", "ioi")
METHODS = (Method.ABLATION, Method.EAP_IG)
LEVEL = 0.8


def demo_specs(model: str, n: int) -> list[DiscoverySpec]:
    """One spec per task and method, each asking for the circuit at 80 % faithfulness."""
    return [DiscoverySpec(model=model, task=t, method=m, levels=(LEVEL,), n=n) for t in TASKS for m in METHODS]


def jobs_demo(cat: Catalogue, model: str, n: int, as_json: bool) -> dict[str, Any]:
    """Submit the demo's jobs, wait for them; the overlap report (printed unless ``as_json``)."""
    specs = demo_specs(model, n)
    client = job_client()
    submitted = [client.submit(s) for s in specs]
    finished = wait_for([j["id"] for j in submitted], as_json)
    circuits = {(s.task, s.method.value): j["circuit_ids"][0] for s, j in zip(specs, finished, strict=True)}
    report = overlap_report(cat, circuits)
    report["jobs"] = {f"{s.task}/{s.method.value}": {"id": j["id"], "new": sub["new"]}
                      for s, j, sub in zip(specs, finished, submitted, strict=True)}
    if not as_json:
        _print(report, model)
    return report


def overlap_report(cat: Catalogue, circuits: dict[tuple[str, str], str]) -> dict[str, Any]:
    """The overlap questions over the demo's circuits, by method and by task."""
    by_method: dict[str, Any] = {}
    for method in {m for _, m in circuits}:
        ids = {t: circuits[(t, method)] for t in TASKS}
        shared = list(cat.consensus([ids[t] for t in SEQUENCES])[0].support)
        by_method[method] = {
            "jaccard": cat.matrix([ids[t] for t in TASKS]).node,
            "sequences_share": shared,
            "with_shared": {t: sorted(set(shared) & set(cat.get(ids[t]).node_names)) for t in ("greater-than", "ioi")},
        }
    across = {t: list(cat.consensus([circuits[(t, m.value)] for m in METHODS])[0].support) for t in TASKS}
    faith = {f"{t}/{m}": cat.get(cid).provenance.faithfulness for (t, m), cid in circuits.items()}
    return {"tasks": list(TASKS), "circuits": {f"{t}/{m}": c for (t, m), c in circuits.items()},
            "faithfulness": faith, "by_method": by_method, "every_method_keeps": across}


def _print(report: dict[str, Any], model: str) -> None:
    rows = [[k, c, report["faithfulness"][k], "new" if report["jobs"][k]["new"] else "reused"]
            for k, c in report["circuits"].items()]
    table(f"Circuits of {model} at {LEVEL:.0%} (one job each)", ["task/method", "circuit", "faithfulness", "job"],
          rows)
    for method, r in report["by_method"].items():
        table(f"{method}: node-level Jaccard", ["", *TASKS], [[t, *row] for t, row in zip(TASKS, r["jaccard"],
                                                                                         strict=True)])
        console.print(f"[bold]{method}: shared by {', '.join(SEQUENCES)}:[/bold] "
                      + (", ".join(r["sequences_share"]) or "(none)"))
        for t, items in r["with_shared"].items():
            console.print(f"  {t} has of it: " + (", ".join(items) or "(none)"))
    table("Kept by every method", ["task", "components"],
          [[t, ", ".join(c) or "(none)"] for t, c in report["every_method_keeps"].items()])
