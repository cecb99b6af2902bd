"""Per task, the circuits of path patching, IPE and EAP-IG side by side: size, faithfulness, node Jaccard.

Run with scripts/bench.sh methods_overlap [--model toy] [--n 16] [--tasks ioi months ...] [--metric M].
Each method runs with its defaults (path patching and IPE at ``min_effect`` 0.02, IPE by threshold
BFS; EAP-IG at the 80 % level) on the task's metric, or ``--metric``, through ``run_discovery``, as
``circat discover`` does. Node Jaccard counts heads and MLPs; the last columns name what path
patching and IPE find that EAP-IG's circuit lacks.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from circat.service.circuit import Circuit
from circat.service.jobs.spec import DiscoverySpec
from circat.service.tasks import TASKS
from circat.service.types import Method, Metric
from circat.workers.discover import run_discovery

METHODS = (Method.PATH_PATCHING, Method.IPE, Method.EAP_IG)


def jaccard(a: Circuit, b: Circuit) -> float:
    x, y = a.component_mask, b.component_mask
    return float((x & y).sum() / max(1, (x | y).sum()))


def only_in(a: Circuit, b: Circuit) -> str:
    names = a.graph.node_names
    return ", ".join(names[i] for i in np.flatnonzero(a.component_mask & ~b.component_mask)) or "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="toy")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--device", default=None)
    ap.add_argument("--metric", type=Metric, choices=list(Metric), default=None, help="default: each task's")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    table = Table("task", *(f"{m.value}: f / nodes / edges" for m in METHODS), "J(PP, IPE)", "J(PP, EAP-IG)",
                  "J(IPE, EAP-IG)", "PP not in EAP-IG", "IPE not in EAP-IG", "s (PP, IPE, EAP-IG)",
                  title=f"{args.model}, n={args.n}, metric {args.metric or 'of the task'}: path patching, IPE and "
                        "EAP-IG (80 % level)")
    for task in args.tasks:
        got: dict[Method, Circuit] = {}
        seconds = []
        for m in METHODS:
            t = time.perf_counter()
            spec = DiscoverySpec(model=args.model, task=task, method=m, n=args.n, metric=args.metric,
                                 levels=(0.8,) if m is Method.EAP_IG else None)
            got[m] = run_discovery(spec, args.device).circuits[0]
            seconds.append(time.perf_counter() - t)
        pp, ipe, ig = (got[m] for m in METHODS)
        table.add_row(task, *(f"{c.provenance.faithfulness:.2f} / {c.n_nodes} / {c.n_edges}" for c in (pp, ipe, ig)),
                      f"{jaccard(pp, ipe):.2f}", f"{jaccard(pp, ig):.2f}", f"{jaccard(ipe, ig):.2f}",
                      only_in(pp, ig), only_in(ipe, ig), " / ".join(f"{s:.0f}" for s in seconds))
        print(f"{task}: done in {sum(seconds):.0f} s", flush=True)
    Console(width=250).print(table)


if __name__ == "__main__":
    main()
