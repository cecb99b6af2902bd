"""``circat stability``: the stability summary of a resampled discovery run, and how the CLI prints it."""

from __future__ import annotations

from typing import Annotated

import typer

from circat.service.cli.main import JsonOpt, StoreOpt, app, catalogue
from circat.service.cli.output import console, emit_json, fail, table
from circat.service.errors import CatalogueError
from circat.service.stability import StabilityRecord

SHOWN_ITEMS = 12
"""items per level the table lists, most frequent first (``--json`` has them all)"""


@app.command()
def stability(
    run: Annotated[str, typer.Argument(help="a stability id (s...), a circuit of the run (c...) or its job (j...)")],
    store: StoreOpt = None, as_json: JsonOpt = False,
) -> None:
    """The stability summary of a resampled discovery run (``circat discover --resamples R``): per level, how alike
    the R circuits are (pairwise Jaccard) and how often each head, MLP and edge recurs."""
    with catalogue(store, as_json) as cat:
        try:
            record = cat.stability(_circuit_of_job(run) if run.startswith("j") else run)
        except (CatalogueError, ValueError, OSError) as exc:
            fail(exc, as_json)
    emit_json(record.view()) if as_json else print_stability(record)


def _circuit_of_job(job_id: str) -> str:
    from circat.service.jobs.client import job_client

    job = job_client().get(job_id)
    if not job["circuit_ids"]:
        raise ValueError(f"job {job_id} stored no circuits (status {job['status']})")
    return job["circuit_ids"][0]


def print_stability(record: StabilityRecord) -> None:
    """The summary as tables: per level, the Jaccard spread at each level of detail, and the most frequent items."""
    console.print(f"stability {record.id}: {record.method} on {record.model} / {record.task}, "
                  f"{len(record.seeds)} resamples (seeds {record.seeds[0]}..{record.seeds[-1]})")
    rows = []
    for lv in record.levels:
        for name, s in (("node", lv.node), ("edge", lv.edge)):
            if s is not None:
                rows.append([lv.key, name, s.mean, s.std, s.min, s.max, len(lv.frequency_of(name))])
    table("pairwise Jaccard of the resamples' circuits", ["level", "items", "mean", "std", "min", "max", "seen"], rows)
    for lv in record.levels:
        top = list(lv.node_frequency.items())[:SHOWN_ITEMS]
        console.print(f"level {lv.key}: " + ", ".join(f"{k} {v:.0%}" for k, v in top))

