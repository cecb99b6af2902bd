"""Path methods benchmark: exact versus derivative-approximated IPE, and one path-patching build.

IPE: both variants search best-first for the same number of complete paths; the table gives wall
time, model evaluations (path runs forward plus partial paths differentiated), and how far the
approximated top paths agree with the exact ones, compared at equal size k (as many approximated
top paths as the exact search found: the share of exact paths among them, and the Jaccard overlap
of the two path sets' edges), with the evaluations each search had spent when it had reported k
paths (best-first reports paths largest first, so a search stopped by its time budget is compared
on the paths it found). ``--equal-time S ...`` runs only another comparison: both variants search
best-first with no path limit for S seconds each, and the table gives the faithfulness of the circuit
each found (the union of its paths) in that time. Path patching: wall time of one full iterative build
over (components x one plain forward of the same batch). Run with
scripts/bench.sh paths [--model toy] [--task ioi] [--n 16] [--paths 100] [--recheck 1 8] [--optimism 0 0.9]
[--ig-steps 1 2] [--time-budget S] [--equal-time S ...].
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import torch
from rich.console import Console
from rich.table import Table

from circat.service.jobs.spec import PathSearch
from circat.service.types import Ablation, Method, Search
from circat.workers.engine.evaluate import EdgeEvaluator
from circat.workers.engine.ipe import IpeResult, PathScorer, path_circuit, search_paths
from circat.workers.engine.methods import IG_STEPS
from circat.workers.engine.patching import PatchingEngine, last_logits
from circat.workers.engine.path_patching import path_patching
from circat.workers.models import load_model
from circat.workers.tasks import get_task
from circat.workers.tasks.encode import encode
from circat.workers.tasks.render import for_tokenizer


def ipe_run(engine: PatchingEngine, search: PathSearch, approximate: bool,
            steps: int = 1) -> tuple[IpeResult, float]:
    scorer = PathScorer(engine, EdgeEvaluator(engine).baselines, steps)
    start = time.perf_counter()
    result = search_paths(scorer, search, approximate)
    return result, time.perf_counter() - start


def equal_time_table(engine: PatchingEngine, budgets: list[float], min_effect: float) -> Table:
    """Exact and approximated IPE (with ipe-approx's default derivative points), best-first with no path limit,
    each stopped after every budget in turn: the faithfulness of the union of the paths each found in that time."""
    evaluator = EdgeEvaluator(engine)
    table = Table("budget s", "variant", "wall s", "evaluations", "paths", "edges", "faithfulness",
                  title="IPE at equal wall time (best-first, no path limit)")
    for budget in budgets:
        search = PathSearch(min_effect=min_effect, search=Search.BEST_FIRST, max_paths=100_000, time_budget_s=budget)
        for name, approximate in (("exact", False), ("approx", True)):
            result, wall = ipe_run(engine, search, approximate, IG_STEPS[Method.IPE_APPROX] if approximate else 1)
            mask = path_circuit(engine.layout.graph, result.paths)[0]
            faith = float(evaluator.faithfulness(mask[None])[0])
            table.add_row(f"{budget:g}", name, f"{wall:.1f}", str(result.counts.total), str(len(result.paths)),
                          str(int(mask.sum())), f"{faith:.3f}")
    return table


def forward_seconds(engine: PatchingEngine, repeats: int = 3) -> float:
    """One plain forward of the batch (last-position logits, as the engine's runs), best of ``repeats``."""
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            last_logits(engine.model, engine.batch.clean, [], engine.batch.lengths)
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--paths", type=int, default=100)
    parser.add_argument("--min-effect", type=float, default=1e-4)
    parser.add_argument("--recheck", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--optimism", type=float, nargs="+", default=[0.0, 0.9])
    parser.add_argument("--ig-steps", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--time-budget", type=float, default=None, help="seconds each search may take at most")
    parser.add_argument("--equal-time", type=float, nargs="+", default=[],
                        help="seconds: compare both variants' circuits found in each of these times")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = load_model(args.model, args.device)
    batch = encode(for_tokenizer(get_task(args.task), model.tokenizer).examples(args.n, seed=0), model.tokenizer)
    engine = PatchingEngine(model, batch, Ablation.RESAMPLE)
    graph = engine.layout.graph
    console = Console(width=160)
    if args.equal_time:
        console.print(equal_time_table(engine, args.equal_time, args.min_effect))
        return
    title = f"IPE best-first, top {args.paths} paths: {model.name} / {args.task}, n={len(batch)}, {engine.model.device}"
    table = Table("variant", "wall s", "forward", "backward", "evaluations", "x fewer", "evals to k",
                  "x fewer to k", "top k shared", "edge Jaccard", "paths", "stopped", title=title)
    base = PathSearch(min_effect=args.min_effect, search=Search.BEST_FIRST, max_paths=args.paths,
                      time_budget_s=args.time_budget)
    exact, wall = ipe_run(engine, base, False)
    exact_paths = {p.edges for p in exact.paths}
    exact_edges = path_circuit(graph, exact.paths)[0]
    k = len(exact.paths)
    exact_to_k = exact.evaluations_for(k)
    table.add_row("exact", f"{wall:.1f}", str(exact.counts.forward), "0", str(exact.counts.total), "1.0",
                  str(exact_to_k), "1.0", "-", "-", str(k), exact.stopped)
    console.print(f"exact: {wall:.1f} s, {exact.counts.total} evaluations, {len(exact.paths)} paths ({exact.stopped})")
    for steps, recheck, q in itertools.product(args.ig_steps, args.recheck, args.optimism):
        approx, wall = ipe_run(engine, base.model_copy(update={"recheck": recheck, "optimism": q}), True, steps)
        top = approx.paths[:k]  # compared at equal size: as many paths as the exact search found
        edges = path_circuit(graph, top)[0]
        jaccard = (edges & exact_edges).sum() / max(1, (edges | exact_edges).sum())
        shared = len(exact_paths & {p.edges for p in top}) / max(1, len(exact_paths))
        ratio = exact.counts.total / max(1, approx.counts.total)
        to_k = approx.evaluations_for(k)
        ratio_k = exact_to_k / max(1, to_k)
        variant = f"approx, ig steps {steps}, recheck {recheck}, optimism {q}"
        table.add_row(variant, f"{wall:.1f}", str(approx.counts.forward),
                      str(approx.counts.backward), str(approx.counts.total), f"{ratio:.1f}",
                      str(to_k), f"{ratio_k:.1f}", f"{shared:.0%}", f"{jaccard:.0%}",
                      str(len(approx.paths)), approx.stopped)
        console.print(f"{variant}: {wall:.1f} s, {approx.counts.total} evaluations, "
                      f"{len(approx.paths)} paths ({approx.stopped}), {to_k} to report {k} "
                      f"({ratio_k:.1f}x fewer than exact); its top {len(top)}: "
                      f"{shared:.0%} of exact paths, edge Jaccard {jaccard:.0%}")
    console.print(table)
    evaluator = EdgeEvaluator(engine)
    start = time.perf_counter()
    built = path_patching(evaluator, PathSearch())
    wall = time.perf_counter() - start
    fwd = forward_seconds(engine)
    components = int(graph.component_mask.sum())
    console.print(f"path patching: {len(built.rounds)} rounds, {evaluator.evaluations} masks, {wall:.1f} s; "
                  f"one forward {fwd * 1000:.1f} ms; build / (components x forward) = {wall / (components * fwd):.1f} "
                  f"({components} components)")


if __name__ == "__main__":
    main()
