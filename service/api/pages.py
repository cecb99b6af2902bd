"""Pictures over HTTP: a circuit's SVG diagram, the HTML report, and the browse page at ``/``.

The diagram is a resource like any other (its errors are problem+json); the report and the browse
page are HTML pages for people, so their errors are readable HTML pages with the same statuses.
The browse page is server-rendered with plain forms (no script): filter, tick circuits, open
their report.
"""

from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import StringConstraints

from circat.service.api.heavy import HeavyGate
from circat.service.catalogue import Catalogue
from circat.service.circuit import CIRCUIT_ID
from circat.service.errors import CatalogueError, NotFound
from circat.service.limits import MAX_NAME_LENGTH, Limits
from circat.service.overlap import OverlapError
from circat.service.report.diagram import DEFAULT_TOP_EDGES, DiagramOptions, circuit_svg
from circat.service.report.page import STYLE, report_html
from circat.service.stores import CircuitFilter, CircuitSummary

CircuitId = Annotated[str, Path(pattern=f"^{CIRCUIT_ID}$", description="c and 23 hex digits")]
Name = Annotated[str, StringConstraints(max_length=MAX_NAME_LENGTH)]
OptionalName = Annotated[str | None, Query(max_length=MAX_NAME_LENGTH)]
Faithfulness = Annotated[float | None, Query(allow_inf_nan=False)]
BROWSE_LIMIT = 200
SVG = "image/svg+xml"


def page_router(cat: Catalogue, reads: dict[str, Any], limits: Limits, gate: HeavyGate) -> APIRouter:
    """Routes for the diagram, the report and the browse page; the diagram and the report are heavy work."""
    router = APIRouter()
    pages = {"response_class": HTMLResponse, "responses": _html_errors(reads["responses"], 404, 422)}
    most = min(limits.max_report_circuits, limits.max_ids)
    TopEdges = Annotated[int, Query(ge=1, le=limits.max_top_edges, description="edges drawn at most per diagram "
                                    "(largest |score| first; CIRCAT_MAX_TOP_EDGES)")]

    @router.get("/circuits/{circuit_id:circuit_id}/diagram.svg", response_class=Response,
                responses={**reads["responses"], 200: {"content": {SVG: {"schema": {"type": "string"}}}}})
    @gate.guard
    def diagram(circuit_id: CircuitId, top_edges: TopEdges = DEFAULT_TOP_EDGES, node_view: bool = False) -> Response:
        svg = circuit_svg(cat.get(circuit_id), DiagramOptions(top_edges=top_edges, node_view=node_view))
        return Response(svg, media_type=SVG)

    ids_query = Query(max_length=most, description="circuit ids, repeated (default: the newest matching; at most "
                                                   "CIRCAT_MAX_REPORT_CIRCUITS)")

    @router.get("/report", **pages)
    @gate.guard
    def report(
        ids: Annotated[list[Name] | None, ids_query] = None,
        model: OptionalName = None, task: OptionalName = None, family: OptionalName = None,
        method: OptionalName = None, min_faithfulness: Faithfulness = None,
        limit: Annotated[int, Query(ge=1, le=most)] = min(20, most), top_edges: TopEdges = DEFAULT_TOP_EDGES,
        methods: Annotated[bool, Query(description="add the methods leaderboard per model and task")] = False,
    ) -> HTMLResponse:
        try:
            circuits = cat.select(ids or [], CircuitFilter(model, task, family, method, min_faithfulness), limit)
        except (CatalogueError, OverlapError) as exc:
            return _error_page(404 if isinstance(exc, NotFound) else 422, str(exc))
        if not circuits:
            return _error_page(404, "no circuit matches these filters")
        return HTMLResponse(report_html(circuits, top_edges=top_edges, evaluations=cat.evaluations_of(circuits),
                                        frequencies=cat.stabilities_of(circuits), methods=methods))

    @router.get("/", **pages)
    def browse(
        model: OptionalName = None, task: OptionalName = None, family: OptionalName = None,
        method: OptionalName = None, min_faithfulness: Faithfulness = None,
    ) -> HTMLResponse:
        flt = CircuitFilter(model, task, family, method, min_faithfulness)
        items, total = cat.store.summaries(flt, BROWSE_LIMIT, 0)
        return HTMLResponse(_browse_html(flt, items, total, most))

    return router


def _html_errors(reads: dict[int | str, dict[str, Any]], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """A page's error statuses: readable HTML from the page, problem+json from parameter validation."""
    out = dict(reads)
    for s in statuses:
        base = out.get(s, {"description": "error"})
        out[s] = {**base, "content": {**base.get("content", {}), "text/html": {"schema": {"type": "string"}}}}
    return out


def _error_page(status: int, message: str) -> HTMLResponse:
    body = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error {status}</title>"
            f"<style>{STYLE}</style></head><body><h1>Error {status}</h1><p class=\"error\">{escape(message)}</p>"
            f"<p><a href=\"/\">Back to the catalogue</a></p></body></html>")
    return HTMLResponse(body, status_code=status)


def _browse_html(flt: CircuitFilter, items: list[CircuitSummary], total: int, max_ids: int) -> str:
    def field(name: str, value: object) -> str:
        shown = "" if value is None else escape(str(value))
        return f'<label>{name} <input name="{name}" value="{shown}" size="14"></label> '

    values = {"model": flt.model, "task": flt.task, "family": flt.task_family, "method": flt.method,
              "min_faithfulness": flt.min_faithfulness}
    filters = "".join(field(name, value) for name, value in values.items())
    rows = "".join(
        f'<tr><td><input type="checkbox" name="ids" value="{s.id}"></td><td>{escape(s.model)}</td>'
        f"<td>{escape(s.task)}</td><td>{escape(s.task_family or '')}</td><td>{escape(s.method)}</td>"
        f"<td>{'' if s.faithfulness is None else f'{s.faithfulness:.3f}'}</td><td>{s.n_nodes}</td>"
        f"<td>{s.n_edges if s.has_edges else '-'}</td>"
        f'<td><a href="/circuits/{s.id}/diagram.svg">{s.id}</a></td></tr>' for s in items)
    shown = f"{len(items)} of {total}" if total > len(items) else str(total)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Circuit Catalogue</title>"
            f"<style>{STYLE}</style></head><body><h1>Circuit Catalogue</h1>"
            f'<form class="filters" method="get" action="/">{filters}<button type="submit">Filter</button></form>'
            f"<p>{shown} circuit(s). Tick up to {max_ids} and open their report.</p>"
            f'<form method="get" action="/report"><button type="submit">Open report</button>'
            f"<table class=\"circuits\"><tr><th></th><th>model</th><th>task</th><th>family</th><th>method</th>"
            f"<th>faithfulness</th><th>nodes</th><th>edges</th><th>diagram</th></tr>{rows}</table></form>"
            f"</body></html>")
