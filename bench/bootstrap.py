"""Bootstrap-interval benchmark (figures, not a timed test): what intervals add to an evaluation.

Run with scripts/bench.sh bootstrap [--model toy|smollm2-135m] [--n 64] [--bootstrap 200] [--repeats 5].
Evaluates node expressions (one batch) and edge expressions (memoised edge runs) with and without intervals on
the same loaded model and prompts; prints the median wall time of each and the ratio (target: under 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from circat.service.catalogue import Catalogue
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.stores import open_store
from circat.service.types import Level
from circat.workers.engine.functional import evaluate_selections
from circat.workers.evaluation import prepare

NODE = ("heads(L0-L1) | m1", "layer(2), m3", "heads(all) - layer(0)")
EDGE = ("input->a3.h0<v>, a3.h0->logits, input->logits", "input->m0, m0->logits")


def _median(ready, bootstrap: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate_selections(ready.engine, ready.selections, bootstrap=bootstrap)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, open_store(f"sqlite:///{Path(tmp) / 'c.db'}") as store:
        cat = Catalogue(store)
        for level, texts in ((Level.NODE, NODE), (Level.EDGE, EDGE)):
            spec = EvaluationSpec(expressions=texts, model=args.model, task="months", level=level, n=args.n)
            ready = prepare(spec, cat)
            _median(ready, 0, 1)  # warm: the corrupted run and the memo-free first pass
            plain = _median(ready, 0, args.repeats)
            with_intervals = _median(ready, args.bootstrap, args.repeats)
            print(f"{args.model} {level.value} level, {len(texts)} expressions, {args.n} prompts: "
                  f"{plain * 1e3:.1f} ms without intervals, {with_intervals * 1e3:.1f} ms with {args.bootstrap} "
                  f"resamples: x{with_intervals / plain:.3f}")


if __name__ == "__main__":
    main()
