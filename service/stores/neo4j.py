"""The Neo4j catalogue over Bolt: circuits as subgraphs of a shared per-model graph.

Graph model (schema/README.md): ``(:Model)-[:HAS_COMPONENT]->(:Component)``,
``(:Edge)-[:FROM]->(:Component)``, ``(:Edge)-[:TO {input}]->(:Component)``,
``(:Circuit)-[:HAS_NODE {score}]->(:Component)``, ``(:Circuit)-[:HAS_EDGE {score}]->(:Edge)``,
``(:Circuit)-[:FOR_TASK]->(:Task)``, ``(:Circuit)-[:OF_MODEL]->(:Model)``,
``(:Evaluation)-[:OF {position}]->(:Circuit)``, ``(:Evaluation)-[:ON]->(:Task)``,
``(:Stability)-[:RESAMPLE {level, resample}]->(:Circuit)``, ``(:Stability)-[:ON]->(:Task)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
from neo4j import Driver, GraphDatabase, ManagedTransaction
from neo4j.exceptions import AuthError, ClientError, ServiceUnavailable, SessionExpired

from circat.service.circuit import Circuit, Provenance
from circat.service.errors import NotFound, StoreUnavailable
from circat.service.graph import ModelGraph, graph_for
from circat.service.schema_files import cypher_statements
from circat.service.stability import StabilityRecord
from circat.service.stores.base import (
    EVALUATION_FIELDS,
    CircuitFilter,
    CircuitStore,
    CircuitSummary,
    EvaluationFilter,
    EvaluationRecord,
    Membership,
    Stored,
    check_registered,
    pack_outside_scores,
    rebuild,
)
from circat.service.stores.versions import CATALOGUE_SCHEMA, check_not_newer
from circat.service.types import Level, ModelShape

BATCH = 10_000
_SCHEMA_RULE_EXISTS = {"Neo.ClientError.Schema.EquivalentSchemaRuleAlreadyExists",
                       "Neo.ClientError.Schema.ConstraintAlreadyExists", "Neo.ClientError.Schema.IndexAlreadyExists"}
T = TypeVar("T")
_MODEL_SHAPE = ("m.n_layers AS n_layers, m.n_heads AS n_heads, m.parallel_attn_mlp AS parallel_attn_mlp, "
                "m.d_model AS d_model")
LINK_EXISTING_EDGES = (
    "MATCH (c:Circuit {id: $id}) UNWIND range(0, size($idx) - 1) AS i "
    "OPTIONAL MATCH (x:Edge {model: $model, idx: $idx[i]}) "
    "FOREACH (e IN CASE WHEN x IS NULL THEN [] ELSE [x] END | CREATE (c)-[:HAS_EDGE {score: $s[i]}]->(e)) "
    "WITH i, x WHERE x IS NULL RETURN collect(i) AS i")
"""Link a circuit to the ``Edge`` nodes of ``$idx`` that exist (scores ``$s``); the positions of the missing ones."""

_CIRCUIT_PROPS = """
c.model AS model, c.task AS task, c.task_family AS task_family, c.method AS method,
c.params AS params, c.metric AS metric, c.faithfulness AS faithfulness, c.citation AS citation,
c.created_at AS created_at, c.n_nodes AS n_nodes, c.n_edges AS n_edges, c.has_edges AS has_edges,
c.id AS id"""


def _chunks(rows: list[T]) -> Iterator[list[T]]:
    for i in range(0, len(rows), BATCH):
        yield rows[i : i + BATCH]


def _score(s: float) -> float | None:
    return None if np.isnan(s) else float(s)


class Neo4jStore(CircuitStore):
    """Circuits in Neo4j; schema from ``schema/neo4j/constraints.cypher`` applied on open."""

    def __init__(self, uri: str, user: str | None = None, password: str | None = None, database: str = "neo4j"):
        auth = (user, password or "") if user else None
        self.uri = uri
        self.database = database
        self.driver: Driver = GraphDatabase.driver(  # no notifications: reading a property no node has yet is normal
            uri, auth=auth, connection_timeout=5.0, max_transaction_retry_time=5.0, notifications_min_severity="OFF"
        )
        self._schema_applied = False

    def _ensure_schema(self) -> None:
        """On first use: refuse a newer schema, apply the constraints, migrate an older catalogue, record the
        version (every step idempotent, so an interrupted migration is safe to run again)."""
        if self._schema_applied:
            return
        found = self.schema_version()
        check_not_newer(f"Neo4j catalogue {self.uri}", found)
        for stmt in cypher_statements("constraints.cypher"):
            try:
                self.driver.execute_query(stmt, database_=self.database)
            except ClientError as exc:  # another client created the same rule a moment before
                if exc.code not in _SCHEMA_RULE_EXISTS:
                    raise
        if found < CATALOGUE_SCHEMA:
            self.driver.execute_query("MERGE (m:Meta {name: 'catalogue'}) SET m.schema_version = $v",
                                      v=CATALOGUE_SCHEMA, database_=self.database)
        self._schema_applied = True

    def migrate(self) -> int | None:
        with self._unavailable():
            found = self.schema_version()
            empty = not self.driver.execute_query("MATCH (n) RETURN n LIMIT 1", database_=self.database).records
            self._ensure_schema()
        return None if empty else found

    def schema_version(self) -> int:
        """The schema version the catalogue records; 0 for one written before versions (or an empty database,
        which its first use stamps with the current version)."""
        records = self.driver.execute_query("MATCH (m:Meta {name: 'catalogue'}) RETURN m.schema_version AS v",
                                            database_=self.database).records
        return int(records[0]["v"]) if records else 0

    @contextmanager
    def _unavailable(self, where: str | None = None) -> Iterator[None]:
        try:
            yield
        except (ServiceUnavailable, SessionExpired, AuthError, OSError) as exc:
            raise StoreUnavailable(f"Neo4j at {where or self.uri} unreachable: {exc}") from exc

    def _write(self, fn: Callable[[ManagedTransaction], T]) -> T:
        with self._unavailable():
            self._ensure_schema()
            with self.driver.session(database=self.database) as s:
                return s.execute_write(fn)

    def _read(self, fn: Callable[[ManagedTransaction], T]) -> T:
        with self._unavailable():
            self._ensure_schema()
            with self.driver.session(database=self.database) as s:
                return s.execute_read(fn)

    def write_many(self, circuits: Sequence[Circuit]) -> list[Stored]:
        def work(tx: ManagedTransaction) -> dict[int, bool]:
            order = sorted(range(len(circuits)), key=lambda i: circuits[i].provenance.model)  # one lock order
            return {i: _put(tx, circuits[i]) for i in order}

        new = self._write(work)
        return [Stored(c.id, new[i]) for i, c in enumerate(circuits)]

    def get(self, circuit_id: str) -> Circuit:
        def work(tx: ManagedTransaction) -> dict | None:  # items as one list each: a record per item is ~7x slower
            rec = tx.run(f"MATCH (c:Circuit {{id: $id}})-[:OF_MODEL]->(m:Model) RETURN {_CIRCUIT_PROPS}, "
                         "c.node_scores AS node_scores, c.edge_scores AS edge_scores, c.node_extra AS node_extra, "
                         f"c.annotations AS annotations, {_MODEL_SHAPE}, "
                         "COLLECT { MATCH (c)-[r:HAS_NODE]->(n) RETURN [n.idx, r.score] } AS nodes, "
                         "COLLECT { MATCH (c)-[r:HAS_EDGE]->(e) RETURN [e.idx, r.score] } AS edges",
                         id=circuit_id).single()
            return None if rec is None else rec.data()

        row = self._read(work)
        if row is None:
            raise NotFound(f"no circuit with id {circuit_id!r}")
        shape = _shape(row)
        g = graph_for(shape)
        node_mask, node_scores = rebuild(g.n_nodes, row["nodes"], row["node_scores"])
        edge_mask = edge_scores = None
        if row["has_edges"]:
            edge_mask, edge_scores = rebuild(g.n_edges, row["edges"], row["edge_scores"])
        return Circuit(
            provenance=_provenance(row), shape=shape, node_mask=node_mask, node_scores=node_scores,
            edge_mask=edge_mask, edge_scores=edge_scores, node_extra=json.loads(row["node_extra"]),
            annotations=json.loads(row["annotations"]),
        )

    def summaries(self, flt: CircuitFilter, limit: int = 50, offset: int = 0) -> tuple[list[CircuitSummary], int]:
        where = ("($model IS NULL OR c.model = $model) AND ($task IS NULL OR c.task = $task) "
                 "AND ($family IS NULL OR c.task_family = $family) AND ($method IS NULL OR c.method = $method) "
                 "AND ($minf IS NULL OR c.faithfulness >= $minf)")
        params = {"model": flt.model, "task": flt.task, "family": flt.task_family, "method": flt.method,
                  "minf": flt.min_faithfulness}

        def work(tx: ManagedTransaction) -> tuple[list[dict], int]:
            total = tx.run(f"MATCH (c:Circuit) WHERE {where} RETURN count(c) AS n", **params).single()["n"]
            rows = tx.run(f"MATCH (c:Circuit) WHERE {where} RETURN {_CIRCUIT_PROPS} "
                          "ORDER BY c.created_at DESC, c.id SKIP $offset LIMIT $limit",
                          offset=offset, limit=limit, **params).data()
            return rows, total

        rows, total = self._read(work)
        return [_summary(r) for r in rows], total

    def put_evaluations(self, records: Sequence[EvaluationRecord]) -> list[Stored]:
        named = sorted({c for r in records for c in r.circuits})

        def work(tx: ManagedTransaction) -> list[bool]:
            held = tx.run("UNWIND $ids AS id MATCH (c:Circuit {id: id}) RETURN collect(c.id) AS ids",
                          ids=named).single()["ids"]
            missing = [i for i in named if i not in set(held)]
            if missing:
                raise NotFound(f"no circuit with id(s) {', '.join(map(repr, missing))}")
            return [_put_evaluation(tx, r) for r in records]

        return [Stored(r.id, new) for r, new in zip(records, self._write(work), strict=True)]

    def evaluations(self, flt: EvaluationFilter, limit: int = 50,
                    offset: int = 0) -> tuple[list[EvaluationRecord], int]:
        where = ("($model IS NULL OR e.model = $model) AND ($task IS NULL OR e.task = $task) "
                 "AND ($mode IS NULL OR e.mode = $mode) AND ($min IS NULL OR e.value >= $min) "
                 "AND ($circuit IS NULL OR EXISTS { (e)-[:OF]->(:Circuit {id: $circuit}) })")
        params = {"model": flt.model, "task": flt.task, "mode": flt.mode, "min": flt.min_value,
                  "circuit": flt.circuit}

        def work(tx: ManagedTransaction) -> tuple[list[dict], int]:
            total = tx.run(f"MATCH (e:Evaluation) WHERE {where} RETURN count(e) AS n", params).single()["n"]
            rows = tx.run(f"MATCH (e:Evaluation) WHERE {where} WITH e ORDER BY e.created_at DESC, e.id "
                          "SKIP $offset LIMIT $limit RETURN e {.*} AS e, COLLECT { MATCH (e)-[o:OF]->(c:Circuit) "
                          "RETURN c.id ORDER BY o.position } AS circuits",
                          params | {"offset": offset, "limit": limit}).data()
            return rows, total

        rows, total = self._read(work)
        return [EvaluationRecord(**{f: r["e"].get(f) for f in EVALUATION_FIELDS}, circuits=tuple(r["circuits"]),
                                 created_at=r["e"]["created_at"].to_native()) for r in rows], total

    def put_stability(self, record: StabilityRecord) -> Stored:
        named = record.circuits
        links = [{"id": c, "level": i, "resample": j} for i, lv in enumerate(record.levels)
                 for j, c in enumerate(lv.circuits)]
        props = {"id": record.id, "model": record.model, "task": record.task, "method": record.method,
                 "spec": record.spec, "seeds": list(record.seeds), "summary": json.dumps(record.summary_json()),
                 "created_at": record.created_at}

        def work(tx: ManagedTransaction) -> bool:
            held = set(tx.run("UNWIND $ids AS id MATCH (c:Circuit {id: id}) RETURN collect(c.id) AS ids",
                              ids=named).single()["ids"])
            missing = [i for i in named if i not in held]
            if missing:
                raise NotFound(f"no circuit with id(s) {', '.join(map(repr, missing))}")
            created = tx.run("MERGE (s:Stability {id: $id}) ON CREATE SET s += $props, s.new = true "
                             "WITH s, coalesce(s.new, false) AS new REMOVE s.new RETURN new",
                             id=record.id, props=props).single()["new"]
            if created:
                tx.run("MATCH (s:Stability {id: $id}) MERGE (t:Task {name: $task}) CREATE (s)-[:ON]->(t) "
                       "WITH s UNWIND $links AS l MATCH (c:Circuit {id: l.id}) "
                       "CREATE (s)-[:RESAMPLE {level: l.level, resample: l.resample}]->(c)",
                       id=record.id, task=record.task, links=links).consume()
            return created

        return Stored(record.id, self._write(work))

    def stabilities(self, circuit: str | None = None, limit: int = 50,
                    offset: int = 0) -> tuple[list[StabilityRecord], int]:
        where = "($circuit IS NULL OR EXISTS { (s)-[:RESAMPLE]->(:Circuit {id: $circuit}) })"

        def work(tx: ManagedTransaction) -> tuple[list[dict], int]:
            total = tx.run(f"MATCH (s:Stability) WHERE {where} RETURN count(s) AS n", circuit=circuit).single()["n"]
            rows = tx.run(f"MATCH (s:Stability) WHERE {where} WITH s ORDER BY s.created_at DESC, s.id "
                          "SKIP $offset LIMIT $limit RETURN s {.*} AS s",
                          circuit=circuit, offset=offset, limit=limit).data()
            return rows, total

        rows, total = self._read(work)
        return [_stability(r["s"]) for r in rows], total

    def stability(self, record_id: str) -> StabilityRecord:
        row = self._read(lambda tx: tx.run("MATCH (s:Stability {id: $id}) RETURN s {.*} AS s", id=record_id).single())
        if row is None:
            raise NotFound(f"no stability summary with id {record_id!r}")
        return _stability(row["s"])

    def delete(self, circuit_id: str) -> None:
        def work(tx: ManagedTransaction) -> int:
            tx.run("MATCH (:Circuit {id: $id})<-[:OF]-(e:Evaluation) DETACH DELETE e", id=circuit_id).consume()
            tx.run("MATCH (:Circuit {id: $id})<-[:RESAMPLE]-(s:Stability) DETACH DELETE s", id=circuit_id).consume()
            return tx.run("MATCH (c:Circuit {id: $id}) DETACH DELETE c RETURN count(*) AS n",
                          id=circuit_id).single()["n"]

        if self._write(work) == 0:
            raise NotFound(f"no circuit with id {circuit_id!r}")

    def memberships(self, circuit_ids: list[str]) -> list[Membership]:
        def work(tx: ManagedTransaction) -> list[dict]:
            return tx.run(
                "UNWIND $ids AS id MATCH (c:Circuit {id: id}) RETURN c.id AS id, c.model AS model, "
                "c.has_edges AS has_edges, COLLECT { MATCH (c)-[:HAS_NODE]->(n) RETURN n.idx } AS nodes, "
                "COLLECT { MATCH (c)-[:HAS_EDGE]->(e) RETURN e.idx } AS edges",
                ids=circuit_ids,
            ).data()

        found = {r["id"]: r for r in self._read(work)}
        missing = [i for i in circuit_ids if i not in found]
        if missing:
            raise NotFound(f"no circuit with id(s) {', '.join(map(repr, missing))}")
        shapes = {m: self.model_shape(m) for m in {r["model"] for r in found.values()}}
        return [
            Membership(
                cid, found[cid]["model"], shapes[found[cid]["model"]],  # type: ignore[arg-type]
                np.sort(np.asarray(found[cid]["nodes"], dtype=np.int64)),
                np.sort(np.asarray(found[cid]["edges"], dtype=np.int64)) if found[cid]["has_edges"] else None,
            )
            for cid in circuit_ids
        ]

    def containing(self, model: str, index: int, level: Level) -> list[str]:
        label, rel = ("Component", "HAS_NODE") if level is Level.NODE else ("Edge", "HAS_EDGE")

        def work(tx: ManagedTransaction) -> list[str]:
            return tx.run(f"MATCH (x:{label} {{model: $model, idx: $idx}})<-[:{rel}]-(c:Circuit) "
                          "WITH c.id AS id ORDER BY id RETURN collect(id) AS ids",
                          model=model, idx=index).single()["ids"]

        return self._read(work)

    def model_shape(self, model: str) -> ModelShape | None:
        def work(tx: ManagedTransaction) -> dict | None:
            rec = tx.run(f"MATCH (m:Model {{name: $name}}) RETURN {_MODEL_SHAPE}", name=model).single()
            return None if rec is None else rec.data()

        r = self._read(work)
        return None if r is None else _shape(r)

    def models(self) -> list[str]:
        return self._read(lambda tx: tx.run("MATCH (m:Model) RETURN m.name AS n ORDER BY n").value())

    def ping(self) -> None:
        with self._unavailable():
            self.driver.verify_connectivity()
            self._ensure_schema()

    def close(self) -> None:
        self.driver.close()


def _put(tx: ManagedTransaction, circuit: Circuit) -> bool:
    """Write one circuit in ``tx`` unless its id is stored (then ``False``): model, circuit node, components and
    edges by need.

    The model's node is locked first, so writers of one model take turns: the second writer of a circuit
    waits for the first to commit and then finds it stored, instead of failing on the id's constraint.
    """
    cid, g, model = circuit.id, circuit.graph, circuit.provenance.model
    n_components = _lock_model(tx, model, circuit.shape)
    if tx.run("MATCH (c:Circuit {id: $id}) RETURN 1", id=cid).single():
        return False
    if n_components != g.n_nodes:
        _register_components(tx, model, g)
    _create_circuit(tx, circuit, cid)
    _link(tx, cid, model, "Component", "HAS_NODE", circuit.node_mask, circuit.node_scores)
    if circuit.edge_mask is not None:
        _link_edges(tx, cid, model, g, circuit.edge_mask, circuit.edge_scores)
    return True


def _stability(s: dict[str, Any]) -> StabilityRecord:
    return StabilityRecord.from_stored(s["model"], s["task"], s["method"], s["spec"], s["seeds"],
                                       json.loads(s["summary"]), s["created_at"].to_native())


def _put_evaluation(tx: ManagedTransaction, r: EvaluationRecord) -> bool:
    """Create one evaluation with its links unless its id is stored (then ``False``)."""
    props = {f: getattr(r, f) for f in EVALUATION_FIELDS} | {"id": r.id, "circuits": list(r.circuits),
                                                              "created_at": r.created_at}
    created = tx.run("MERGE (e:Evaluation {id: $id}) ON CREATE SET e += $props, e.new = true "
                     "WITH e, coalesce(e.new, false) AS new REMOVE e.new RETURN new", id=r.id, props=props).single()
    if not created["new"]:
        return False
    tx.run("MATCH (e:Evaluation {id: $id}) MERGE (t:Task {name: $task}) CREATE (e)-[:ON]->(t) "
           "WITH e UNWIND range(0, size($circuits) - 1) AS i MATCH (c:Circuit {id: $circuits[i]}) "
           "CREATE (e)-[:OF {position: i}]->(c)", id=r.id, task=r.task, circuits=list(r.circuits)).consume()
    return True


def _lock_model(tx: ManagedTransaction, model: str, shape: ModelShape) -> int | None:
    """Create the model's node if new and take its write lock until ``tx`` ends; its registered component count.

    Refuses a circuit whose model is registered with another shape (``CircuitInvalid``).
    """
    given = {k: v for k, v in shape.__dict__.items() if v is not None}
    rec = tx.run("MERGE (m:Model {name: $name}) ON CREATE SET m += $shape SET m.last_write = datetime() "
                 f"RETURN m.n_components AS n, {_MODEL_SHAPE}", name=model, shape=given).single()
    check_registered(model, _shape(rec), shape)
    return rec["n"]


def _register_components(tx: ManagedTransaction, model: str, g: ModelGraph) -> None:
    """Register a model's components, once (edges are registered by need: ``_ensure_edges``)."""
    nodes = [{"uid": f"{model}/{n.name}", "name": n.name, "kind": n.kind.value, "layer": n.layer,
              "head": n.head, "idx": i} for i, n in enumerate(g.nodes)]
    tx.run("MATCH (m:Model {name: $model}) UNWIND $rows AS r MERGE (n:Component {uid: r.uid}) "
           "ON CREATE SET n.model = $model, n.name = r.name, n.kind = r.kind, n.layer = r.layer, "
           "n.head = r.head, n.idx = r.idx MERGE (m)-[:HAS_COMPONENT]->(n)", model=model, rows=nodes)
    tx.run("MATCH (m:Model {name: $model}) SET m.n_components = $n", model=model, n=g.n_nodes)


def _link_edges(tx: ManagedTransaction, cid: str, model: str, g: ModelGraph, mask: np.ndarray,
                scores: np.ndarray) -> None:
    """Create the circuit's HAS_EDGE relationships, and the ``Edge`` nodes (with ``FROM``/``TO``) that no
    stored circuit has needed yet: one index lookup per edge that exists.

    ``CREATE``, not ``MERGE``, for new edges: the caller holds the model's lock (``_lock_model``), so no
    other writer creates this model's edges between the lookup and the creation.
    """
    idx = np.flatnonzero(mask).tolist()
    vals = [_score(v) for v in scores[idx]]
    names = g.node_names
    for idx_chunk, val_chunk in zip(_chunks(idx), _chunks(vals), strict=True):
        missing = tx.run(LINK_EXISTING_EDGES, id=cid, model=model, idx=idx_chunk, s=val_chunk).single()["i"]
        if not missing:
            continue
        rows = [{"uid": f"{model}/{e.name}", "name": e.name, "idx": i, "input": e.port.value, "score": val_chunk[j],
                 "src": f"{model}/{names[int(g.edge_src[i])]}", "dst": f"{model}/{names[int(g.edge_dst[i])]}"}
                for j, i, e in ((j, idx_chunk[j], g.edge(idx_chunk[j])) for j in missing)]
        tx.run("MATCH (c:Circuit {id: $id}) UNWIND $rows AS r MATCH (s:Component {uid: r.src}) "
               "MATCH (d:Component {uid: r.dst}) CREATE (e:Edge {uid: r.uid, model: $model, name: r.name, idx: r.idx}) "
               "CREATE (e)-[:FROM]->(s) CREATE (e)-[:TO {input: r.input}]->(d) "
               "CREATE (c)-[:HAS_EDGE {score: r.score}]->(e)", id=cid, rows=rows, model=model)


def _link(tx: ManagedTransaction, cid: str, model: str, label: str, rel: str,
          mask: np.ndarray, scores: np.ndarray) -> None:
    """Create the circuit's HAS_NODE / HAS_EDGE relationships, matched by (model, idx)."""
    idx = np.flatnonzero(mask)
    vals = [_score(v) for v in scores[idx]]
    for idx_chunk, val_chunk in zip(_chunks(idx.tolist()), _chunks(vals), strict=True):
        tx.run(f"MATCH (c:Circuit {{id: $id}}) UNWIND range(0, size($idx) - 1) AS i "
               f"MATCH (x:{label} {{model: $model, idx: $idx[i]}}) CREATE (c)-[:{rel} {{score: $s[i]}}]->(x)",
               id=cid, model=model, idx=idx_chunk, s=val_chunk)


def _create_circuit(tx: ManagedTransaction, c: Circuit, cid: str) -> None:
    p = c.provenance
    props: dict[str, Any] = {
        "id": cid, "model": p.model, "task": p.task, "task_family": p.task_family, "method": p.method,
        "params": json.dumps(p.params, sort_keys=True), "metric": p.metric, "faithfulness": p.faithfulness,
        "citation": p.citation, "created_at": p.created_at, "n_nodes": c.n_nodes, "n_edges": c.n_edges,
        "has_edges": c.has_edges, "node_extra": json.dumps(c.node_extra), "annotations": json.dumps(c.annotations),
    }
    for key, mask, scores in (("node_scores", c.node_mask, c.node_scores), ("edge_scores", c.edge_mask, c.edge_scores)):
        if (packed := pack_outside_scores(mask, scores)) is not None:
            props[key] = bytearray(packed)
    tx.run("MATCH (m:Model {name: $model}) MERGE (t:Task {name: $task}) "
           "ON CREATE SET t.family = $family "
           "CREATE (c:Circuit) SET c = $props CREATE (c)-[:OF_MODEL]->(m) CREATE (c)-[:FOR_TASK]->(t)",
           model=p.model, task=p.task, family=p.task_family, props=props)


def _shape(r: Any) -> ModelShape:
    """A model's shape from a record or row holding ``_MODEL_SHAPE``."""
    return ModelShape(r["n_layers"], r["n_heads"], r["parallel_attn_mlp"], r["d_model"])


def _provenance(r: dict) -> Provenance:
    return Provenance(
        model=r["model"], task=r["task"], method=r["method"], task_family=r["task_family"],
        params=json.loads(r["params"]), metric=r["metric"], faithfulness=r["faithfulness"],
        citation=r["citation"], created_at=r["created_at"].to_native(),
    )


def _summary(r: dict) -> CircuitSummary:
    p = _provenance(r)
    return CircuitSummary(
        id=r["id"], model=p.model, task=p.task, task_family=p.task_family, method=p.method, params=p.params,
        metric=p.metric, faithfulness=p.faithfulness, citation=p.citation, created_at=p.created_at,
        n_nodes=r["n_nodes"], n_edges=r["n_edges"], has_edges=r["has_edges"],
    )
