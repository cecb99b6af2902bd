"""Methods leaderboard (figures, not a timed test): every discovery method on the same prompts of each task.

Run with scripts/bench.sh methods [--model toy] [--task ioi ...] [--n 16] [--method NAME ...] [--store URL].
Each method runs through ``run_discovery`` with its defaults at the 80 % level (ACDC at its default tau, path
methods with their own stopping rules), EAP-IG at both MIB variants (inputs, activations), EAP and EAP-IG also
with GIM gradients; ``--method`` runs only the rows it names. Printed per task:
wall time and work (passes, masks or training steps), the circuit's faithfulness and size, CPR and CMD (MIB's
areas, edge methods), faithfulness at 1, 2, 5 and 10 % of edges on the absolute-score curve, and the mean node
Jaccard to the other methods' circuits. With ``--store`` the circuits are stored, so ``circat report --methods``
shows the same table and their curves on one plot per task.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from circat.service.catalogue import Catalogue
from circat.service.circuit import Circuit
from circat.service.jobs.spec import DiscoverySpec
from circat.service.report.methods import PERCENTS, MethodRow, method_row, number_text
from circat.service.stores import open_store
from circat.service.types import Gradient, IgPoints, Method
from circat.workers.discover import run_discovery

ROWS: tuple[tuple[str, Method, dict[str, Any]], ...] = (
    ("ablation", Method.ABLATION, {"levels": (0.8,)}),
    ("path-patching", Method.PATH_PATCHING, {}),
    ("ipe", Method.IPE, {}),
    ("ipe-approx", Method.IPE_APPROX, {}),
    ("eap", Method.EAP, {"levels": (0.8,)}),
    ("eap-gim", Method.EAP, {"levels": (0.8,), "gradient": Gradient.GIM}),
    ("eap-ig", Method.EAP_IG, {"levels": (0.8,)}),
    ("eap-ig-activations", Method.EAP_IG, {"levels": (0.8,), "ig_points": IgPoints.ACTIVATIONS}),
    ("eap-ig-gim", Method.EAP_IG, {"levels": (0.8,), "gradient": Gradient.GIM}),
    ("acdc", Method.ACDC, {}),
    ("edge-pruning", Method.EDGE_PRUNING, {"levels": (0.8,)}),
)


def _work(c: Circuit) -> str:
    """The work a circuit's run reports: forward passes, masks, or training steps."""
    p, ev = c.provenance.params, c.annotations.get("evaluation", {})
    if c.provenance.method == Method.EDGE_PRUNING:
        return f"{p['steps']} steps + {ev.get('masks_evaluated', 0)} masks"
    if c.provenance.method == Method.ACDC:
        return f"{p['masks_tried']} masks / {p['passes']} passes"
    if "masks_evaluated" in p:
        return f"{p['masks_evaluated']} masks"
    if "forward_passes" in p:
        return f"{p['forward_passes']} fwd" + (f" + {p['backward_passes']} bwd" if "backward_passes" in p else "")
    return f"{ev.get('masks_evaluated', '?')} masks"


def _jaccard(a: Circuit, b: Circuit) -> float:
    x, y = a.component_mask, b.component_mask
    return float((x & y).sum() / max(1, (x | y).sum()))


def _task(args: argparse.Namespace, task: str, cat: Catalogue | None) -> None:
    got: dict[str, tuple[Circuit, float, MethodRow]] = {}
    for name, method, extra in ROWS:
        if args.method and name not in args.method:
            continue
        spec = DiscoverySpec.parse({"model": args.model, "task": task, "method": method, "n": args.n, **extra})
        started = time.perf_counter()
        circuit = run_discovery(spec, args.device).circuits[0]
        seconds, row = time.perf_counter() - started, method_row(circuit)
        got[name] = (circuit, seconds, row)
        if cat is not None:
            cat.add(circuit)
        print(f"  {task} / {name}: {seconds:.1f} s, faithfulness {row.faithfulness}, "
              f"{number_text(row.edges)} edges, CPR {number_text(row.cpr)}", flush=True)
    table = Table("method", "seconds", "work", "faithfulness", "nodes", "edges", "CPR", "CMD",
                  *(f"f @ {p} %" for p in PERCENTS), "mean node J to others",
                  title=f"{args.model} / {task}, {args.n} prompts (80 % level where a method takes one)")
    for name, (c, seconds, row) in got.items():
        others = [_jaccard(c, o) for other, (o, _, _) in got.items() if other != name]
        table.add_row(name, f"{seconds:.1f}", _work(c), row.faithfulness, str(row.nodes), number_text(row.edges),
                      number_text(row.cpr), number_text(row.cmd), *(number_text(row.at[pc]) for pc in PERCENTS),
                      f"{sum(others) / len(others):.2f}")
    Console(width=220).print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy")
    ap.add_argument("--task", action="append", help="repeatable (default: ioi, numerals, greater-than)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--method", action="append", choices=[name for name, _, _ in ROWS],
                    help="repeatable (default: every row; on a CPU, ACDC and exact IPE take hours on SmolLM2)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--store", default=None, help="store the circuits in this catalogue")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    store = open_store(args.store) if args.store else None
    try:
        for task in args.task or ["ioi", "numerals", "greater-than"]:
            _task(args, task, None if store is None else Catalogue(store))
    finally:
        if store is not None:
            store.close()


if __name__ == "__main__":
    main()
