"""Stability summaries of resampled discovery runs over REST: one by id, or a page of them (those holding a
circuit, if asked). Runs are submitted as jobs (``POST /jobs`` with ``resamples``)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.routing import APIRoute
from pydantic import BaseModel

from circat.service.catalogue import Catalogue
from circat.service.circuit import CIRCUIT_ID
from circat.service.limits import Limits
from circat.service.stability import LevelStability, StabilityRecord

STABILITY_ID = "^s[0-9a-f]{23}$"


class StabilityAnswer(BaseModel):
    """A resampled run's stability summary: per level, the circuits of each resample, the spread of their pairwise
    Jaccard (node and edge level) and each item's frequency across the resamples."""

    id: str
    model: str
    task: str
    method: str
    spec: str
    seeds: list[int]
    levels: list[LevelStability]
    created_at: datetime

    @staticmethod
    def of(record: StabilityRecord) -> "StabilityAnswer":
        return StabilityAnswer(**record.view())


class StabilityPage(BaseModel):
    items: list[StabilityAnswer]
    total: int
    limit: int
    offset: int


def stability_router(cat: Catalogue, reads: dict, limits: Limits, route_class: type[APIRoute]) -> APIRouter:
    """``GET /stability`` and ``GET /stability/{id}`` over ``cat``."""
    router = APIRouter(tags=["stability"], route_class=route_class)

    @router.get("/stability", **reads)
    def list_stability(
        circuit: Annotated[str | None, Query(pattern=f"^{CIRCUIT_ID}$", description="only runs holding it")] = None,
        limit: Annotated[int, Query(ge=1, le=limits.max_page)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> StabilityPage:
        """Stability summaries of resampled runs, newest first."""
        items, total = cat.stabilities(circuit, limit, offset)
        return StabilityPage(items=[StabilityAnswer.of(r) for r in items], total=total, limit=limit, offset=offset)

    @router.get("/stability/{record_id}", **reads)
    def get_stability(record_id: Annotated[str, Path(pattern=STABILITY_ID, description="s and 23 hex digits")],
                      ) -> StabilityAnswer:
        """One stability summary (``circat stability``)."""
        return StabilityAnswer.of(cat.stability(record_id))

    return router
