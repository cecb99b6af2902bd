"""FastAPI application: circuits, overlap questions, component membership, health."""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, Query, Response
from fastapi.responses import JSONResponse

from service import __version__
from service.api import problems
from service.catalogue import Catalogue
from service.config import Settings
from service.documents import CircuitDocument, MibDocument, document_from_circuit, mib_from_circuit
from service.stores import CircuitFilter, CircuitStore, open_store

Ids = Annotated[list[str], Query(min_length=2, description="circuit ids (repeat the parameter)")]


def create_app(store: CircuitStore | None = None, settings: Settings | None = None) -> FastAPI:
    """The API over ``store`` (default: the configured one)."""
    settings = settings or Settings.from_env()
    cat = Catalogue(store or open_store(settings.store_url))
    app = FastAPI(title="Circuit Catalogue", version=__version__,
                  description="Circuits of language models: store, compare, exchange (MIB format).")
    problems.install(app)

    def require_key(authorization: Annotated[str | None, Header()] = None) -> None:
        if settings.api_key is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise _Unauthorized()

    @app.exception_handler(_Unauthorized)
    async def unauthorized(*_: Any) -> JSONResponse:
        return problems.problem(401, "Unauthorized", "writes need 'Authorization: Bearer <CIRCAT_API_KEY>'")

    writes = [Depends(require_key)]

    @app.get("/health")
    def health() -> dict[str, Any]:
        cat.store.ping()
        return {"status": "ok", "store": type(cat.store).__name__, "version": __version__}

    @app.get("/circuits")
    def list_circuits(
        model: str | None = None, task: str | None = None, family: str | None = None,
        method: str | None = None, min_faithfulness: float | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50, offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        flt = CircuitFilter(model, task, family, method, min_faithfulness)
        items, total = cat.store.summaries(flt, limit, offset)
        return {"items": [asdict(s) for s in items], "total": total, "limit": limit, "offset": offset}

    @app.get("/circuits/{circuit_id}")
    def get_circuit(circuit_id: str, format: Literal["circat", "mib"] = "circat") -> Any:
        circuit = cat.get(circuit_id)
        if format == "mib":
            return mib_from_circuit(circuit)
        return document_from_circuit(circuit).model_dump(mode="json", exclude_none=True)

    @app.post("/circuits", status_code=201, dependencies=writes)
    def import_circuit(doc: CircuitDocument, response: Response) -> dict[str, str]:
        cid = cat.add_document(doc)
        response.headers["Location"] = f"/circuits/{cid}"
        return {"id": cid}

    @app.post("/circuits/mib", status_code=201, dependencies=writes)
    def import_mib(
        mib: Annotated[MibDocument, Body()], response: Response, model: str, task: str, method: str,
        task_family: str | None = None, citation: str | None = None, metric: str | None = None,
    ) -> dict[str, str]:
        cid = cat.add_mib(mib, model, task, method, task_family=task_family, citation=citation, metric=metric)
        response.headers["Location"] = f"/circuits/{cid}"
        return {"id": cid}

    @app.delete("/circuits/{circuit_id}", status_code=204, dependencies=writes)
    def delete_circuit(circuit_id: str) -> Response:
        cat.store.delete(circuit_id)
        return Response(status_code=204)

    @app.get("/overlap")
    def overlap(a: str, b: str) -> dict[str, Any]:
        return {"a": a, "b": b, "levels": [asdict(p) | {"n_shared": p.n_shared} for p in cat.overlap(a, b)]}

    @app.get("/consensus")
    def consensus(ids: Ids, min_support: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
        return {"ids": ids, "levels": [asdict(c) for c in cat.consensus(ids, min_support)]}

    @app.get("/matrix")
    def matrix(ids: Ids) -> dict[str, Any]:
        return asdict(cat.matrix(ids))

    @app.get("/diff")
    def diff(a: str, b: str) -> dict[str, Any]:
        return {"a": a, "b": b, "only_in_a": {lvl.value: items for lvl, items in cat.difference(a, b).items()}}

    @app.get("/components/{model}/{name}/circuits")
    def membership(model: str, name: str) -> dict[str, Any]:
        level, ids = cat.containing(model, name)
        return {"model": model, "item": name, "level": level.value, "circuits": ids}

    app.state.catalogue = cat
    return app


class _Unauthorized(Exception):
    """A write without the configured bearer key."""
