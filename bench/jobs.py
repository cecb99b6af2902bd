"""Job service benchmark: dispatch latency and per-job overhead on the embedded worker and on Celery + Redis.

Jobs are tiny toy-model EAP runs submitted one at a time (each after the previous finished), so
latency is dispatch, not queueing. Dispatch = started_at - submitted_at; overhead = the job's wall
time in its worker (finished_at - started_at) minus the bare ``run_discovery`` call of the same
spec (same seed: how many masks a run evaluates depends on its prompts) in this process, warm.
"beyond discover" also subtracts the catalogue write that ``circat discover`` makes as well (the
same circuits into an open SQLite catalogue): what the job service itself adds. The table gives
medians over the jobs. Run with scripts/bench.sh jobs [--jobs 200].
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from circat.service.catalogue import Catalogue
from circat.service.config import Settings
from circat.service.jobs.dispatch import Dispatcher
from circat.service.jobs.spec import DiscoverySpec
from circat.service.jobs.store import Job, JobStore
from circat.service.limits import Limits
from circat.service.stores import open_store
from circat.service.types import Method
from circat.workers.discover import run_discovery
from tests.servers import redis_server, wait_until, worker_process

SPEC = DiscoverySpec(model="toy", task="ioi", method=Method.EAP, n=8)


def bare_seconds(seeds: range, work: Path) -> tuple[dict[int, float], dict[int, float]]:
    """Per seed's spec: wall time of the discovery call alone (model loaded and warm), and of storing its circuits."""
    run_discovery(SPEC)
    times, writes = {}, {}
    with open_store(f"sqlite:///{work / 'bare-cat.db'}") as store:
        cat = Catalogue(store, Limits.from_env())
        for s in seeds:
            t = time.perf_counter()
            run = run_discovery(SPEC.model_copy(update={"seed": s}))
            times[s] = time.perf_counter() - t
            cat.add_many(run.circuits)
            writes[s] = time.perf_counter() - t - times[s]
    return times, writes


def closed_loop(d: Dispatcher, n_jobs: int) -> list[Job]:
    """Submit jobs one after another, each once the previous has finished; the finished records."""
    done = []
    for s in range(n_jobs + 1):
        job, _ = d.submit(SPEC.model_copy(update={"seed": s}))
        wait_until(lambda j=job: d.jobs.get(j.id).status.finished, 300, "a job")
        done.append(d.jobs.get(job.id))
    return done[1:]  # the first job loads the model in the worker


def row(path: str, jobs: list[Job], bare: dict[int, float], writes: dict[int, float]) -> list[str]:
    assert all(j.status.value == "succeeded" for j in jobs), [j.error_message for j in jobs if j.error_message]
    dispatch = sorted((j.started_at - j.submitted_at).total_seconds() * 1000 for j in jobs)
    walls = {j.spec.seed: (j.finished_at - j.started_at).total_seconds() for j in jobs}
    wall, base = statistics.median(walls.values()), statistics.median(bare[s] for s in walls)
    over = statistics.median(walls[s] - bare[s] for s in walls)
    beyond = statistics.median(walls[s] - bare[s] - writes[s] for s in walls)
    return [path, str(len(jobs)), f"{statistics.median(dispatch):.1f}", f"{dispatch[int(0.95 * len(dispatch))]:.1f}",
            f"{wall * 1000:.0f}", f"{base * 1000:.0f}", f"{over * 1000:.0f}", f"{100 * over / base:.1f} %",
            f"{statistics.median(writes.values()) * 1000:.0f}", f"{beyond * 1000:.0f}", f"{100 * beyond / base:.1f} %"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    table = Table("path", "jobs", "dispatch median ms", "dispatch p95 ms", "job wall ms", "bare discovery ms",
                  "overhead ms", "overhead / bare", "catalogue write ms", "beyond discover ms",
                  "beyond / bare", title=f"Jobs: {SPEC.method.value} on {SPEC.model}, n={SPEC.n}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bare, writes = bare_seconds(range(1, args.jobs + 1), work)
        for path in ("embedded", "celery"):
            env = {"CIRCAT_DATABASE_URL": f"sqlite:///{work / f'{path}-jobs.db'}",
                   "CIRCAT_STORE_URL": f"sqlite:///{work / f'{path}-cat.db'}"}
            (work / path).mkdir()
            if path == "embedded":
                d = Dispatcher(JobStore(env["CIRCAT_DATABASE_URL"]), replace(Settings.from_env(), broker_url=None))
                with worker_process(work / "embedded.log", **env):
                    table.add_row(*row(path, closed_loop(d, args.jobs), bare, writes))
                continue
            with redis_server(work / path) as redis:
                env["CIRCAT_BROKER_URL"] = redis.url
                d = Dispatcher(JobStore(env["CIRCAT_DATABASE_URL"]), replace(Settings.from_env(), broker_url=redis.url))
                with worker_process(work / "celery.log", **env):
                    table.add_row(*row(path, closed_loop(d, args.jobs), bare, writes))
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
