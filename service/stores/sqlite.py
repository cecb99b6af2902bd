"""The embedded catalogue: SQLite through SQLAlchemy Core, zero set-up."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from circat.service.circuit import Circuit, Provenance
from circat.service.errors import NotFound, StoreUnavailable
from circat.service.graph import graph_for
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
from circat.service.stores.sqlite_schema import (
    circuits_t,
    edges_t,
    evaluation_circuits_t,
    evaluations_t,
    migrate_catalogue,
    models_t,
    nodes_t,
    stability_circuits_t,
    stability_t,
    user_version,
)
from circat.service.types import Level, ModelShape

BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another's write lock before the store reports itself busy (503)."""

def _rows(circuit_id: str, mask: np.ndarray, scores: np.ndarray) -> list[tuple[str, int, float | None]]:
    idx = np.flatnonzero(mask)
    vals = scores[idx]
    return list(zip(itertools.repeat(circuit_id), idx.tolist(),
                    np.where(np.isnan(vals), None, vals).tolist(), strict=False))


def _insert_items(conn: sa.Connection, table: sa.Table, rows: list[tuple[str, int, float | None]]) -> None:
    """Insert (circuit_id, idx, score) rows through the driver: one prepared statement, no per-row binding."""
    conn.exec_driver_sql(f"INSERT INTO {table.name} (circuit_id, idx, score) VALUES (?, ?, ?)", rows)


def ensure_sqlite_dir(url: str) -> None:
    """Create the directory of a ``sqlite:///PATH`` file (the embedded defaults live in a data dir)."""
    path = url.removeprefix("sqlite:///")
    if url.startswith("sqlite:///") and path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


class SqliteStore(CircuitStore):
    """Circuits in one SQLite file; in-graph items as indexed rows."""

    def __init__(self, url: str):
        ensure_sqlite_dir(url)
        self.engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
        sa.event.listen(self.engine, "connect", _pragmas)
        with self._unreachable():
            self._found_version = migrate_catalogue(self.engine, url)

    def schema_version(self) -> int:
        with self._connect() as conn:
            return user_version(conn)

    def migrate(self) -> int | None:
        return self._found_version

    def write_many(self, circuits: Sequence[Circuit]) -> list[Stored]:
        with self._write() as conn:
            return [Stored(c.id, self._insert(conn, c)) for c in circuits]

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A transaction holding the write lock from its start (``BEGIN IMMEDIATE``), so that its
        existence checks and the inserts after them see one state while other writers wait."""
        with self._connect() as conn:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except OperationalError as exc:
                raise StoreUnavailable(f"SQLite catalogue busy: {exc}") from exc
            yield conn
            conn.commit()

    def _insert(self, conn: sa.Connection, circuit: Circuit) -> bool:
        cid = circuit.id
        if conn.execute(sa.select(circuits_t.c.id).where(circuits_t.c.id == cid)).first():
            return False
        model = circuit.provenance.model
        row = conn.execute(sa.select(models_t).where(models_t.c.name == model)).first()
        if row is None:
            conn.execute(models_t.insert().values(name=model, **circuit.shape.__dict__))
        else:
            check_registered(model, _shape(row._mapping), circuit.shape)
        conn.execute(circuits_t.insert().values(**self._circuit_row(circuit)))
        if rows := _rows(cid, circuit.node_mask, circuit.node_scores):
            _insert_items(conn, nodes_t, rows)
        if circuit.edge_mask is not None and (rows := _rows(cid, circuit.edge_mask, circuit.edge_scores)):
            _insert_items(conn, edges_t, rows)
        return True

    @staticmethod
    def _circuit_row(c: Circuit) -> dict:
        p = c.provenance
        return {
            "id": c.id, "model": p.model, "task": p.task, "task_family": p.task_family,
            "method": p.method, "params": json.dumps(p.params, sort_keys=True), "metric": p.metric,
            "faithfulness": p.faithfulness, "citation": p.citation,
            "created_at": p.created_at.astimezone(UTC).isoformat(),
            "n_nodes": c.n_nodes, "n_edges": c.n_edges, "has_edges": c.has_edges,
            "node_scores": pack_outside_scores(c.node_mask, c.node_scores),
            "edge_scores": pack_outside_scores(c.edge_mask, c.edge_scores),
            "node_extra": json.dumps(c.node_extra), "annotations": json.dumps(c.annotations),
        }

    def get(self, circuit_id: str) -> Circuit:
        with self._connect() as conn:
            row = conn.execute(sa.select(circuits_t).where(circuits_t.c.id == circuit_id)).mappings().first()
            if row is None:
                raise NotFound(f"no circuit with id {circuit_id!r}")
            shape = self.model_shape(row["model"])
            assert shape is not None
            g = graph_for(shape)
            node_mask, node_scores = self._items(conn, nodes_t, circuit_id, g.n_nodes, row["node_scores"])
            edge_mask = edge_scores = None
            if row["has_edges"]:
                edge_mask, edge_scores = self._items(conn, edges_t, circuit_id, g.n_edges, row["edge_scores"])
        circuit = Circuit(
            provenance=Provenance(
                model=row["model"], task=row["task"], method=row["method"], task_family=row["task_family"],
                params=json.loads(row["params"]), metric=row["metric"], faithfulness=row["faithfulness"],
                citation=row["citation"], created_at=datetime.fromisoformat(row["created_at"]),
            ),
            shape=shape, node_mask=node_mask, node_scores=node_scores, edge_mask=edge_mask,
            edge_scores=edge_scores, node_extra=json.loads(row["node_extra"]),
            annotations=json.loads(row["annotations"]),
        )
        return circuit

    @staticmethod
    def _items(
        conn: sa.Connection, table: sa.Table, cid: str, size: int, dense: bytes | None
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = conn.execute(sa.select(table.c.idx, table.c.score).where(table.c.circuit_id == cid)).all()
        return rebuild(size, rows, dense)

    def summaries(self, flt: CircuitFilter, limit: int = 50, offset: int = 0) -> tuple[list[CircuitSummary], int]:
        c = circuits_t.c
        conds = [col == val for col, val in (
            (c.model, flt.model), (c.task, flt.task), (c.task_family, flt.task_family), (c.method, flt.method),
        ) if val is not None]
        if flt.min_faithfulness is not None:
            conds.append(c.faithfulness >= flt.min_faithfulness)
        with self._connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(circuits_t).where(*conds)).scalar_one()
            rows = conn.execute(
                sa.select(circuits_t).where(*conds).order_by(c.created_at.desc(), c.id).limit(limit).offset(offset)
            ).mappings().all()
        return [_summary(r) for r in rows], total

    def put_evaluations(self, records: Sequence[EvaluationRecord]) -> list[Stored]:
        with self._write() as conn:
            named = sorted({c for r in records for c in r.circuits})
            held = {r.id for r in conn.execute(sa.select(circuits_t.c.id).where(circuits_t.c.id.in_(named)))}
            _require_all(named, held)
            return [Stored(r.id, self._insert_evaluation(conn, r)) for r in records]

    @staticmethod
    def _insert_evaluation(conn: sa.Connection, r: EvaluationRecord) -> bool:
        if conn.execute(sa.select(evaluations_t.c.id).where(evaluations_t.c.id == r.id)).first():
            return False
        row = {f: getattr(r, f) for f in EVALUATION_FIELDS} | {"id": r.id,
                                                              "created_at": r.created_at.astimezone(UTC).isoformat()}
        conn.execute(evaluations_t.insert().values(**row))
        if r.circuits:
            conn.execute(evaluation_circuits_t.insert(), [{"evaluation_id": r.id, "circuit_id": c, "position": i}
                                                          for i, c in enumerate(r.circuits)])
        return True

    def evaluations(self, flt: EvaluationFilter, limit: int = 50,
                    offset: int = 0) -> tuple[list[EvaluationRecord], int]:
        e = evaluations_t.c
        conds = [col == val for col, val in ((e.model, flt.model), (e.task, flt.task), (e.mode, flt.mode))
                 if val is not None]
        if flt.min_value is not None:
            conds.append(e.value >= flt.min_value)
        if flt.circuit is not None:
            link = evaluation_circuits_t.c
            conds.append(e.id.in_(sa.select(link.evaluation_id).where(link.circuit_id == flt.circuit)))
        with self._connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(evaluations_t).where(*conds)).scalar_one()
            rows = conn.execute(sa.select(evaluations_t).where(*conds).order_by(e.created_at.desc(), e.id)
                                .limit(limit).offset(offset)).mappings().all()
            link = evaluation_circuits_t.c
            named: dict[str, list[str]] = {}
            for eid, cid in conn.execute(sa.select(link.evaluation_id, link.circuit_id)
                                         .where(link.evaluation_id.in_([r["id"] for r in rows]))
                                         .order_by(link.evaluation_id, link.position)):
                named.setdefault(eid, []).append(cid)
        return [_evaluation(r, named.get(r["id"], [])) for r in rows], total

    def put_stability(self, record: StabilityRecord) -> Stored:
        with self._write() as conn:
            named = record.circuits
            held = {r.id for r in conn.execute(sa.select(circuits_t.c.id).where(circuits_t.c.id.in_(named)))}
            _require_all(named, held)
            if conn.execute(sa.select(stability_t.c.id).where(stability_t.c.id == record.id)).first():
                return Stored(record.id, False)
            conn.execute(stability_t.insert().values(
                id=record.id, model=record.model, task=record.task, method=record.method, spec=record.spec,
                seeds=json.dumps(record.seeds), summary=json.dumps(record.summary_json()),
                created_at=record.created_at.astimezone(UTC).isoformat()))
            conn.execute(stability_circuits_t.insert(), [
                {"stability_id": record.id, "circuit_id": c, "level": i, "resample": j}
                for i, lv in enumerate(record.levels) for j, c in enumerate(lv.circuits)])
        return Stored(record.id, True)

    def stabilities(self, circuit: str | None = None, limit: int = 50,
                    offset: int = 0) -> tuple[list[StabilityRecord], int]:
        s = stability_t.c
        conds = []
        if circuit is not None:
            link = stability_circuits_t.c
            conds.append(s.id.in_(sa.select(link.stability_id).where(link.circuit_id == circuit)))
        with self._connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(stability_t).where(*conds)).scalar_one()
            rows = conn.execute(sa.select(stability_t).where(*conds).order_by(s.created_at.desc(), s.id)
                                .limit(limit).offset(offset)).mappings().all()
        return [_stability(r) for r in rows], total

    def stability(self, record_id: str) -> StabilityRecord:
        with self._connect() as conn:
            row = conn.execute(sa.select(stability_t).where(stability_t.c.id == record_id)).mappings().first()
        if row is None:
            raise NotFound(f"no stability summary with id {record_id!r}")
        return _stability(row)

    def delete(self, circuit_id: str) -> None:
        with self._write() as conn:
            link = evaluation_circuits_t.c
            reading = [r[0] for r in conn.execute(sa.select(link.evaluation_id).where(link.circuit_id == circuit_id))]
            conn.execute(evaluation_circuits_t.delete().where(link.evaluation_id.in_(reading)))
            conn.execute(evaluations_t.delete().where(evaluations_t.c.id.in_(reading)))
            runs = stability_circuits_t.c
            holding = [r[0] for r in conn.execute(sa.select(runs.stability_id).where(runs.circuit_id == circuit_id))]
            conn.execute(stability_circuits_t.delete().where(runs.stability_id.in_(holding)))
            conn.execute(stability_t.delete().where(stability_t.c.id.in_(holding)))
            for table in (nodes_t, edges_t):
                conn.execute(table.delete().where(table.c.circuit_id == circuit_id))
            if conn.execute(circuits_t.delete().where(circuits_t.c.id == circuit_id)).rowcount == 0:
                raise NotFound(f"no circuit with id {circuit_id!r}")

    def memberships(self, circuit_ids: list[str]) -> list[Membership]:
        with self._connect() as conn:
            heads = {
                r.id: r for r in conn.execute(
                    sa.select(circuits_t.c.id, circuits_t.c.model, circuits_t.c.has_edges)
                    .where(circuits_t.c.id.in_(circuit_ids))
                )
            }
            _require_all(circuit_ids, heads)
            nodes = self._indices(conn, nodes_t, circuit_ids)
            edges = self._indices(conn, edges_t, circuit_ids)
        shapes = {m: self.model_shape(m) for m in {h.model for h in heads.values()}}
        empty = np.zeros(0, dtype=np.int64)
        return [
            Membership(cid, heads[cid].model, shapes[heads[cid].model],  # type: ignore[arg-type]
                       nodes.get(cid, empty), edges.get(cid, empty) if heads[cid].has_edges else None)
            for cid in circuit_ids
        ]

    @staticmethod
    def _indices(conn: sa.Connection, table: sa.Table, ids: list[str]) -> dict[str, np.ndarray]:
        rows = conn.execute(
            sa.select(table.c.circuit_id, table.c.idx).where(table.c.circuit_id.in_(ids))
            .order_by(table.c.circuit_id, table.c.idx)
        ).all()
        out: dict[str, list[int]] = {}
        for cid, idx in rows:
            out.setdefault(cid, []).append(idx)
        return {cid: np.asarray(v, dtype=np.int64) for cid, v in out.items()}

    def containing(self, model: str, index: int, level: Level) -> list[str]:
        table = nodes_t if level is Level.NODE else edges_t
        q = (
            sa.select(table.c.circuit_id)
            .join(circuits_t, circuits_t.c.id == table.c.circuit_id)
            .where(table.c.idx == index, circuits_t.c.model == model)
            .order_by(table.c.circuit_id)
        )
        with self._connect() as conn:
            return list(conn.execute(q).scalars())

    def model_shape(self, model: str) -> ModelShape | None:
        with self._connect() as conn:
            r = conn.execute(sa.select(models_t).where(models_t.c.name == model)).mappings().first()
        return None if r is None else _shape(r)

    def models(self) -> list[str]:
        with self._connect() as conn:
            return list(conn.execute(sa.select(models_t.c.name).order_by(models_t.c.name)).scalars())

    def ping(self) -> None:
        with self._connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()

    def _connect(self) -> sa.Connection:
        with self._unreachable():
            return self.engine.connect()

    @staticmethod
    @contextmanager
    def _unreachable() -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            raise StoreUnavailable(f"SQLite catalogue unreachable: {exc}") from exc


def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _shape(r: sa.RowMapping) -> ModelShape:
    return ModelShape(r["n_layers"], r["n_heads"], r["parallel_attn_mlp"], r["d_model"])


def _require_all(asked: list[str], found: dict) -> None:
    missing = [i for i in asked if i not in found]
    if missing:
        raise NotFound(f"no circuit with id(s) {', '.join(map(repr, missing))}")


def _evaluation(r: sa.RowMapping, circuits: list[str]) -> EvaluationRecord:
    return EvaluationRecord(**{f: r[f] for f in EVALUATION_FIELDS}, circuits=tuple(circuits),
                            created_at=datetime.fromisoformat(r["created_at"]))


def _stability(r: sa.RowMapping) -> StabilityRecord:
    return StabilityRecord.from_stored(r["model"], r["task"], r["method"], r["spec"], json.loads(r["seeds"]),
                                       json.loads(r["summary"]), datetime.fromisoformat(r["created_at"]))


def _summary(r: sa.RowMapping) -> CircuitSummary:
    return CircuitSummary(
        id=r["id"], model=r["model"], task=r["task"], task_family=r["task_family"], method=r["method"],
        params=json.loads(r["params"]), metric=r["metric"], faithfulness=r["faithfulness"],
        citation=r["citation"], created_at=datetime.fromisoformat(r["created_at"]),
        n_nodes=r["n_nodes"], n_edges=r["n_edges"], has_edges=r["has_edges"],
    )
