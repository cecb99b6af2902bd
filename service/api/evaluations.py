"""Functional results over REST: submit an evaluation, extension or transfer (a job), list evaluations, and the
transfer matrix of a model from the evaluations stored (never computed in the request).

A submitted spec is checked before anything is queued: its model as ``POST /jobs`` checks it, every expression
parsed, every circuit it names stored and of one model, within ``CIRCAT_MAX_EXPRESSION_LENGTH`` and
``CIRCAT_MAX_IDS``; a refusal is 422 naming the problem.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.routing import APIRoute

from circat.service.api.jobs import Submitted, submitted
from circat.service.api.problems import declared
from circat.service.catalogue import Catalogue
from circat.service.circuit import CIRCUIT_ID
from circat.service.config import Settings
from circat.service.errors import NotFound
from circat.service.expressions import ExpressionError, circuit_ids, parse
from circat.service.jobs.dispatch import Dispatcher
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.limits import MAX_NAME_LENGTH
from circat.service.report.transfer import newest_cells
from circat.service.stores.base import EvaluationFilter
from circat.service.types import Mode

OptionalName = Annotated[str | None, Query(max_length=MAX_NAME_LENGTH)]


def evaluation_router(cat: Catalogue, dispatcher: Dispatcher, settings: Settings, reads: dict[str, Any],
                      writes: dict[str, Any], route_class: type[APIRoute]) -> APIRouter:
    """``POST /evaluations``, ``GET /evaluations`` and ``GET /transfer`` over ``cat`` and the job database."""
    router = APIRouter(tags=["evaluations"], route_class=route_class)
    limits = settings.limits

    @router.post("/evaluations", status_code=202, response_model=Submitted,
                 responses={200: {"model": Submitted, "description": "the job of an identical spec"},
                            **declared(400, 401, 413, 422, 503)})
    def submit(spec: EvaluationSpec, response: Response,
               force: Annotated[bool, Query(description="a new job even if an identical spec has one")] = False,
               ) -> Submitted:
        """Queue a functional job (evaluate, extend or transfer): 202 with its ``Location``; the results are stored
        evaluations (``GET /evaluations``) and, for extend, a circuit."""
        return submitted(dispatcher, settings, spec, force, response, lambda: _check_expressions(cat, spec))

    @router.get("/evaluations", **reads)
    def list_evaluations(
        circuit: Annotated[str | None, Query(pattern=f"^{CIRCUIT_ID}$", description="only those reading it")] = None,
        model: OptionalName = None, task: OptionalName = None, mode: Mode | None = None,
        min_value: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        limit: Annotated[int, Query(ge=1, le=limits.max_page)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> dict[str, Any]:
        """Stored functional evaluations, newest first: expression, model, task, mode, level, metric, ablation,
        prompts, the value (faithfulness when kept, the share left when knocked out) and the metric values."""
        flt = EvaluationFilter(circuit, model, task, mode.value if mode else None, min_value)
        items, total = cat.evaluations(flt, limit, offset)
        return {"items": [r.view() for r in items], "total": total, "limit": limit, "offset": offset}

    @router.get("/transfer", **reads)
    def transfer(model: Annotated[str, Query(max_length=MAX_NAME_LENGTH)], mode: Mode = Mode.KEEP) -> dict[str, Any]:
        """The transfer matrix of ``model`` from its stored evaluations: per expression (a circuit id is one) its value
        on each task, the newest evaluation per cell; at most ``CIRCAT_MAX_PAGE`` evaluations are read."""
        records, total = cat.evaluations(EvaluationFilter(model=model, mode=mode.value), limits.max_page)
        cells = newest_cells(records, mode.value)
        rows: dict[str, dict[str, float]] = {}
        for (expression, task), value in cells.items():
            rows.setdefault(expression, {})[task] = value
        return {"model": model, "mode": mode.value, "tasks": sorted({t for _, t in cells}),
                "rows": [{"expression": e, "values": v} for e, v in rows.items()], "truncated": total > len(records)}

    return router


def _check_expressions(cat: Catalogue, spec: EvaluationSpec) -> None:
    """Parse every expression; every circuit named must be stored, and all of them of one model."""
    ids: list[str] = []
    for text in spec.expressions:
        try:
            ids += circuit_ids(parse(text, cat.limits.max_expression_length))
        except ExpressionError as exc:
            raise ExpressionError(f"expression {text[:80]!r}: {exc}") from None
    ids = list(dict.fromkeys(ids))
    cat.limits.check_ids(len(ids))
    try:
        members = cat.store.memberships(ids) if ids else []
    except NotFound as exc:
        raise ExpressionError(str(exc)) from None
    models = sorted({m.model for m in members})
    if len(models) > 1:
        raise ExpressionError(f"the expressions name circuits of several models ({', '.join(models)})")
