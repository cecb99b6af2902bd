"""Transfer-matrix benchmark (figures, not a timed test): ``--rows`` circuits x the six tasks, and component importance.

Run with scripts/bench.sh transfer [--model toy|smollm2-135m] [--rows 10] [--size 50] [--n 32] [--device cpu]
[--skip-components].
Rows are node circuits of ``--size`` random components each (seeded), given as expressions; the model is
loaded once before timing. Printed per run:

- the transfer matrix's wall time (prompts, clean and corrupted runs, every masked run, the stored records);
- floor 1, the masked forwards it needs, batched: per task, the metric of the baselines and every row's mask
  on an engine whose clean and corrupted runs are already made;
- floor 2, one plain forward of the task's batch per (task, row) cell;
- component importance for one row: wall time and batched passes per group (target: at most 2).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from circat.service.catalogue import Catalogue
from circat.service.expressions import parse, select
from circat.service.graph import graph_for
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.stores import open_store
from circat.service.tasks import TASKS
from circat.service.types import Level
from circat.workers.discover import metric_for, prompts_for
from circat.workers.engine.functional import component_effects, keep_mask, node_metrics
from circat.workers.engine.patching import PatchingEngine
from circat.workers.models import load_model
from circat.workers.transfer import transfer_matrix


def rows_of(shape, count: int, size: int, seed: int) -> list[str]:
    """``count`` expressions, each a list of ``size`` random components of the model's graph."""
    g = graph_for(shape)
    names = [n.name for n in g.nodes if n.is_component]
    rng = np.random.default_rng(seed)
    return [",".join(rng.choice(names, size=min(size, len(names)), replace=False)) for _ in range(count)]


def median_s(fn, repeat: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--size", type=int, default=50, help="components per row")
    parser.add_argument("--n", type=int, default=32, help="prompts per task")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-components", action="store_true", help="the transfer matrix only")
    args = parser.parse_args()
    model = load_model(args.model, args.device)
    rows = rows_of(model.shape, args.rows, args.size, args.seed)
    print(f"model {model.name} ({model.shape.n_layers} x {model.shape.n_heads}), device {model.device}, "
          f"{args.rows} rows of {min(args.size, graph_for(model.shape).component_mask.sum())} components, "
          f"{len(TASKS)} tasks, {args.n} prompts; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp, open_store(f"sqlite:///{Path(tmp) / 'cat.db'}") as store:
        cat = Catalogue(store)
        spec = EvaluationSpec(kind="transfer", expressions=tuple(rows), model=args.model, tasks=tuple(TASKS),
                              n=args.n, level=Level.NODE)
        t = time.perf_counter()
        transfer_matrix(spec, cat, args.device)
        wall = time.perf_counter() - t
        masked = plain = 0.0
        for task in TASKS:
            prompts = prompts_for(args.model, task, None, args.n, 0, "float32", args.device)
            engine = PatchingEngine(model, prompts.batch, spec.ablation, metric_for(task, None))
            engine.clean_out  # noqa: B018  (the clean run is made before timing, as the corrupted one)
            g = engine.layout.graph
            selections = [select(parse(r), model.name, model.shape, store.memberships, Level.NODE) for r in rows]
            masks = np.stack([np.ones(g.n_nodes, bool), ~g.component_mask,
                              *(keep_mask(s, spec.mode, g.component_mask) for s in selections)])
            masked += median_s(lambda e=engine, m=masks: node_metrics(e, m))
            batch = prompts.batch.clean

            def forward(b=batch) -> None:
                with torch.no_grad():
                    model.bridge(b)

            plain += median_s(forward) * len(rows)
        print(f"transfer matrix {len(rows)} x {len(TASKS)}: {wall:.2f} s; masked forwards it needs, batched: "
              f"{masked:.2f} s (ratio {wall / masked:.2f}); one plain forward per cell: {plain:.2f} s "
              f"(ratio {wall / plain:.2f}); masked runs alone / plain per cell: {masked / plain:.2f}")
        if args.skip_components:
            return
        prompts = prompts_for(args.model, "ioi", None, args.n, 0, "float32", args.device)
        engine = PatchingEngine(model, prompts.batch, spec.ablation, metric_for("ioi", None))
        selection = select(parse(rows[0]), model.name, model.shape, store.memberships, Level.NODE)
        t = time.perf_counter()
        effects = component_effects(engine, selection)
        print(f"component importance of a {selection.n_components}-component circuit on ioi: "
              f"{time.perf_counter() - t:.2f} s; batched passes per group: {effects.passes}")


if __name__ == "__main__":
    main()
