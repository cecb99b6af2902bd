"""FastAPI application: circuits, overlap questions, component membership, health."""

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Path, Query, Response
from pydantic import BaseModel, StringConstraints
from starlette.convertors import Convertor, register_url_convertor

from circat.service import __version__
from circat.service.api import problems
from circat.service.api.access import KeyGuard
from circat.service.api.answers import ConsensusAnswer, OverlapAnswer, overlap_answer
from circat.service.api.bodies import body_route
from circat.service.api.docs import docs_router
from circat.service.api.evaluations import evaluation_router
from circat.service.api.guards import BodyLimit, Timeout, single_valued
from circat.service.api.headers import HeadAsGet, SecurityHeaders
from circat.service.api.heavy import HeavyGate
from circat.service.api.jobs import job_router
from circat.service.api.pages import page_router
from circat.service.api.problems import declared
from circat.service.api.stability import stability_router
from circat.service.catalogue import Catalogue
from circat.service.circuit import CIRCUIT_ID, Circuit
from circat.service.config import Settings
from circat.service.documents import CircuitDocument, MibDocument, document_from_circuit, mib_from_circuit
from circat.service.errors import CatalogueError
from circat.service.jobs.dispatch import Dispatcher
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.jobs.spec import DiscoverySpec
from circat.service.jobs.store import JobStore
from circat.service.limits import MAX_NAME_LENGTH
from circat.service.null import DEFAULT_SAMPLES, NullSpec
from circat.service.overlap import Matrix
from circat.service.stores import CircuitFilter, CircuitStore, open_store
from circat.service.types import NullModel

Name = Annotated[str, StringConstraints(max_length=MAX_NAME_LENGTH)]
PathName = Annotated[str, Path(max_length=MAX_NAME_LENGTH)]
CircuitId = Annotated[str, Path(pattern=f"^{CIRCUIT_ID}$", description="c and 23 hex digits")]
QueryName = Annotated[str, Query(max_length=MAX_NAME_LENGTH)]
OptionalName = Annotated[str | None, Query(max_length=MAX_NAME_LENGTH)]
MAX_OFFSET = 1_000_000_000


class _CircuitIdConvertor(Convertor[str]):
    """Route ``/circuits/{id}`` only for well-formed ids, so ``/circuits/mib`` is its own resource."""

    regex = CIRCUIT_ID

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("circuit_id", _CircuitIdConvertor())


class Batch(BaseModel):
    """A batch import: circuit documents, each validated on its own so that a bad one is refused alone."""

    circuits: list[Any]


def _prepared(cat: Catalogue, raw: Any) -> Circuit | Exception:
    try:
        return cat.prepare(CircuitDocument.model_validate(raw))
    except (CatalogueError, ValueError) as exc:
        return exc


def create_app(store: CircuitStore | None = None, settings: Settings | None = None,
               jobs: JobStore | None = None) -> FastAPI:
    """The API over ``store`` and ``jobs`` (default: the configured ones)."""
    settings = settings or Settings.from_env()
    limits = settings.limits
    cat = Catalogue(store or open_store(settings.store_url), limits)
    dispatcher = Dispatcher(jobs or JobStore(settings.database_url), settings)
    gate = HeavyGate(limits.max_heavy)
    route_class = body_route(limits, gate, {DiscoverySpec: "max_spec_bytes", EvaluationSpec: "max_spec_bytes"})
    app = FastAPI(title="Circuit Catalogue", version=__version__,
                  description="Circuits of language models: store, compare, exchange (MIB format). "
                              "Every error is application/problem+json (RFC 9457).",
                  dependencies=[Depends(single_valued(frozenset({"ids"})))], redirect_slashes=False,
                  docs_url=None, redoc_url=None)
    app.router.route_class = route_class
    problems.install(app, bearer=bool(settings.write_keys))

    read_401 = (401,) if settings.read_keys else ()
    reads: dict[str, Any] = {"responses": declared(*read_401, 404, 422, 503)}
    writes: dict[str, Any] = {"responses": declared(400, 401, 404, 413, 422, 503)}

    @app.get("/health", responses=declared(*read_401, 503))
    def health() -> dict[str, Any]:
        cat.store.ping()
        dispatcher.jobs.ping()
        dispatcher.ping_broker()
        return {"status": "ok", "store": type(cat.store).__name__, "jobs": dispatcher.jobs.engine.dialect.name,
                "broker": "celery" if settings.broker_url else "embedded worker", "version": __version__}

    @app.get("/circuits", **reads)
    def list_circuits(
        model: OptionalName = None, task: OptionalName = None, family: OptionalName = None,
        method: OptionalName = None,
        min_faithfulness: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        limit: Annotated[int, Query(ge=1, le=limits.max_page)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        flt = CircuitFilter(model, task, family, method, min_faithfulness)
        items, total = cat.store.summaries(flt, limit, offset)
        return {"items": [asdict(s) for s in items], "total": total, "limit": limit, "offset": offset}

    @app.get("/circuits/{circuit_id:circuit_id}", **reads)
    @gate.guard
    def get_circuit(circuit_id: CircuitId, format: Literal["circat", "mib"] = "circat") -> Any:
        circuit = cat.get(circuit_id)
        if format == "mib":
            return mib_from_circuit(circuit)
        return document_from_circuit(circuit).model_dump(mode="json", exclude_none=True)

    @app.post("/circuits", status_code=201, **writes)
    def import_circuit(doc: CircuitDocument, response: Response) -> dict[str, str]:
        cid = cat.add_document(doc)
        response.headers["Location"] = f"/circuits/{cid}"
        return {"id": cid}

    some_refused = {207: {"description": "Some circuits refused: each result says which and why"}}

    @app.post("/circuits:batch", status_code=201, responses=writes["responses"] | some_refused)
    def import_batch(batch: Batch, response: Response) -> dict[str, Any]:
        """Store many circuits, 50 to a transaction, each whole or not at all; per circuit its id and whether it
        is new (``new: false``: already stored, nothing written), or its problem."""
        limits.check_batch(len(batch.circuits))
        results = cat.add_batch([_prepared(cat, raw) for raw in batch.circuits])
        refused = sum(isinstance(r, Exception) for r in results)
        new = sum(not isinstance(r, Exception) and r.new for r in results)
        if refused:
            response.status_code = 207
        return {"stored": new, "existing": len(results) - refused - new, "refused": refused,
                "results": [{"index": i} | ({"problem": problems.item_problem(r)} if isinstance(r, Exception)
                                            else {"id": r.id, "new": r.new}) for i, r in enumerate(results)]}

    @app.post("/circuits/mib", status_code=201, **writes)
    def import_mib(
        mib: Annotated[MibDocument, Body()], response: Response, model: QueryName, task: QueryName,
        method: QueryName, task_family: OptionalName = None, citation: OptionalName = None,
        metric: OptionalName = None,
    ) -> dict[str, str]:
        cid = cat.add_mib(mib, model, task, method, task_family=task_family, citation=citation, metric=metric)
        response.headers["Location"] = f"/circuits/{cid}"
        return {"id": cid}

    @app.delete("/circuits/{circuit_id:circuit_id}", status_code=204, **writes)
    def delete_circuit(circuit_id: CircuitId) -> Response:
        cat.store.delete(circuit_id)
        return Response(status_code=204)

    null_query = Query(description="chance is: uniform (exact) or connected random circuits (sampled)")
    samples_query = Query(ge=1, description="draws of a sampled null model")

    @app.get("/overlap", **reads)
    @gate.guard
    def overlap(a: QueryName, b: QueryName, null: Annotated[NullModel, null_query] = NullModel.UNIFORM,
                samples: Annotated[int, samples_query] = DEFAULT_SAMPLES, null_seed: int = 0) -> OverlapAnswer:
        return overlap_answer(a, b, cat.overlap(a, b, NullSpec(null, samples, null_seed)))

    ids_query = Query(min_length=2, max_length=limits.max_ids, description="circuit ids (repeat the parameter)")

    @app.get("/consensus", **reads)
    @gate.guard
    def consensus(
        ids: Annotated[list[Name], ids_query], min_support: Annotated[int | None, Query(ge=1)] = None,
        null: Annotated[NullModel, null_query] = NullModel.UNIFORM,
        samples: Annotated[int, samples_query] = DEFAULT_SAMPLES, null_seed: int = 0,
    ) -> ConsensusAnswer:
        return ConsensusAnswer(ids=ids, levels=cat.consensus(ids, min_support, NullSpec(null, samples, null_seed)))

    @app.get("/matrix", **reads)
    @gate.guard
    def matrix(ids: Annotated[list[Name], ids_query], null: Annotated[NullModel, null_query] = NullModel.UNIFORM,
               samples: Annotated[int, samples_query] = DEFAULT_SAMPLES, null_seed: int = 0) -> Matrix:
        return cat.matrix(ids, NullSpec(null, samples, null_seed))

    @app.get("/diff", **reads)
    @gate.guard
    def diff(a: QueryName, b: QueryName) -> dict[str, Any]:
        return {"a": a, "b": b, "only_in_a": {lvl.value: items for lvl, items in cat.difference(a, b).items()}}

    @app.get("/components/{model}/{name}/circuits", **reads)
    def membership(model: PathName, name: PathName) -> dict[str, Any]:
        level, ids = cat.containing(model, name)
        return {"model": model, "item": name, "level": level.value, "circuits": ids}

    app.include_router(job_router(dispatcher, settings, reads, writes, route_class))
    app.include_router(evaluation_router(cat, dispatcher, settings, reads, writes, route_class))
    app.include_router(stability_router(cat, reads, limits, route_class))
    app.include_router(page_router(cat, reads, limits, gate))
    app.include_router(docs_router(app.title))
    app.state.catalogue = cat
    app.state.dispatcher = dispatcher
    # outermost last: headers on every answer, HEAD as GET, timeout, keys before any body, then the body's size
    app.add_middleware(BodyLimit, max_bytes=max(limits.max_body_bytes, limits.max_spec_bytes))
    app.add_middleware(KeyGuard, settings=settings)
    app.add_middleware(Timeout, seconds=limits.request_timeout_s)
    app.add_middleware(HeadAsGet)
    app.add_middleware(SecurityHeaders)
    return app
