"""The literature part of ``circat demo``: what the published GPT-2 small circuits share."""

from __future__ import annotations

from typing import Any

from circat.service.catalogue import Catalogue
from circat.service.cli.output import console, p_text, table
from circat.service.literature import add_literature

SEQUENCE_AND_COMPARISON = ("numerals", "number-words", "months", "greater-than")


def literature_demo(cat: Catalogue, as_json: bool) -> dict[str, Any]:
    """Import the five literature circuits (idempotent); print the overlap questions unless ``as_json``."""
    ids = add_literature(cat)
    four = [ids[t] for t in SEQUENCE_AND_COMPARISON]
    shared = cat.consensus(four)[0]
    m = cat.matrix(list(ids.values()))
    ioi = {t: cat.overlap(ids["ioi"], cid)[0] for t, cid in ids.items() if t != "ioi"}
    report = {"circuits": ids, "shared_by": list(SEQUENCE_AND_COMPARISON), "shared": list(shared.support),
              "shared_by_chance": {"expected": shared.chance.expected_shared, "p": shared.chance.p},
              "jaccard": {"tasks": list(ids), "node": m.node},
              "ioi": {t: {"shared": p.shared, "jaccard": p.jaccard} for t, p in ioi.items()}}
    if as_json:
        return report
    table("literature circuits (GPT-2 small)", ["task", "id"], [[t, i] for t, i in ids.items()])
    console.print(f"[bold]Shared by {', '.join(SEQUENCE_AND_COMPARISON)}:[/bold] " + ", ".join(shared.support))
    console.print(f"  {len(shared.support)} components; random circuits of these sizes would share "
                  f"{shared.chance.expected_shared:.2f} (p = {p_text(shared.chance.p, shared.chance.samples)})")
    tasks = list(ids)
    table("node-level Jaccard", ["", *tasks], [[t, *row] for t, row in zip(tasks, m.node, strict=True)])
    table("IOI shares with", ["task", "shared", "jaccard", "shared components"],
          [[t, p.n_shared, p.jaccard, ", ".join(p.shared) or "(none)"] for t, p in ioi.items()])
    return report
