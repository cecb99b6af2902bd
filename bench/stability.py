"""Stability benchmark (figures, not a timed test): within-task stability over resamples against between-task
overlap and both null models.

Run with scripts/bench.sh stability [--model toy|smollm2-135m] [--task T ...] [--method ablation --method eap-ig]
[--resamples 10] [--n 16] [--threshold 0.8] [--samples 100].

Per method, every task is discovered on R prompt sets (``run_resampled``: one model load) at one faithfulness
level. Printed:

- per task: the within-task mean pairwise Jaccard (node, edge) and the cost of the R runs as a ratio to R x one
  separate discovery run (its own model load included; target: at most 1);
- per task pair: the Jaccard of the two seed-0 circuits with its expected value under the uniform null (node and
  edge level) and the connected null (edge level, ``--samples`` draws), its p, the cross-run Jaccard interval, each
  task's within-run mean, and whether the pair shares more than chance (uniform p < 0.05) and whether it differs
  more than its own resamples disagree (``RunComparison.differ``).
"""

from __future__ import annotations

import argparse
import itertools
import time

from circat.service.jobs.spec import DiscoverySpec
from circat.service.null import NullSpec
from circat.service.overlap import pairwise
from circat.service.stability import compare_runs
from circat.service.stores.base import Membership
from circat.service.tasks import TASKS
from circat.service.types import Level, Method, NullModel
from circat.workers.discover import Resampled, run_discovery, run_resampled


def _runs(args: argparse.Namespace, method: Method) -> dict[str, Resampled]:
    out = {}
    for task in args.task or list(TASKS):
        spec = DiscoverySpec.parse({"model": args.model, "task": task, "method": method, "n": args.n,
                                    "levels": [args.threshold], "resamples": args.resamples})
        start = time.perf_counter()
        run_discovery(spec.resample(0), args.device)
        one = time.perf_counter() - start
        start = time.perf_counter()
        out[task] = run_resampled(spec, args.device)
        many = time.perf_counter() - start
        record = out[task].stability
        assert record is not None
        (level,) = record.levels
        edge = f"{level.edge.mean:.3f}" if level.edge else "-"
        print(f"  {task:22s} within: node {level.node.mean:.3f} (sd {level.node.std:.3f}), edge {edge}; "
              f"{args.resamples} resamples {many:.1f} s = {many / (args.resamples * one):.2f} x R x one run "
              f"({one:.1f} s)", flush=True)
    return out


def _members(done: Resampled) -> list[Membership]:
    return [Membership.of(run.circuits[0]) for run in done.runs]


def _pair_rows(runs: dict[str, Resampled], samples: int) -> None:
    print(f"  {'task A':20s} {'task B':20s} level  J      E_unif E_conn p       cross-run [95 %]       "
          f"within A/B    perm p  >chance  differ")
    for a, b in itertools.combinations(runs, 2):
        ra, rb = runs[a], runs[b]
        assert ra.stability is not None and rb.stability is not None
        ga, gb = _members(ra), _members(rb)
        uniform = {p.level: p for p in pairwise(ga[0], gb[0])}
        connected = {p.level: p for p in pairwise(ga[0], gb[0], NullSpec(NullModel.CONNECTED, samples))}
        for level, p in uniform.items():
            c = compare_runs(ga, gb, level, (ra.stability.id, rb.stability.id))
            conn = f"{connected[level].chance.expected_jaccard:.3f}" if level is Level.EDGE else "  -  "
            print(f"  {a:20s} {b:20s} {level.value:5s} {p.jaccard:.3f}  {p.chance.expected_jaccard:.3f}  {conn}  "
                  f"{p.chance.p:<7.2g} {c.between:.3f} [{c.low:.3f}, {c.high:.3f}]  {c.within_a:.3f}/{c.within_b:.3f}"
                  f"  {c.p:<7.2g} {'yes' if p.chance.p < 0.05 else 'no':8s} {'yes' if c.differ else 'no'}",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--task", action="append", help="repeatable (default: every registered task)")
    parser.add_argument("--method", action="append", type=Method, help="repeatable (default: ablation, eap-ig)")
    parser.add_argument("--resamples", type=int, default=10)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    for method in args.method or [Method.ABLATION, Method.EAP_IG]:
        print(f"{method.value} on {args.model}, {args.resamples} resamples of {args.n} prompts, level "
              f"{args.threshold}", flush=True)
        _pair_rows(_runs(args, method), args.samples)


if __name__ == "__main__":
    main()
