"""One contract, every store: SQLite and the real Neo4j must behave and answer alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from circat.service.catalogue import Catalogue
from circat.service.documents import CircuitDocument
from circat.service.errors import CircuitInvalid, NotFound
from circat.service.literature import literature_documents
from circat.service.stability import StabilityRecord, level_stability
from circat.service.stores import CircuitFilter, CircuitStore, Stored
from circat.service.stores.base import EvaluationFilter, EvaluationRecord, Membership
from circat.service.stores.sqlite import SqliteStore
from circat.service.types import Level, ModelShape
from tests.helpers import GPT2, SMALL, edge_circuit, node_circuit, same_circuit


def count(store: CircuitStore) -> int:
    return store.summaries(CircuitFilter(), limit=1)[1]


def test_put_get_round_trip_edge_circuit(store):
    c = edge_circuit(score_all=True)
    assert store.put(c) == c.id
    same_circuit(store.get(c.id), c)


def test_put_get_round_trip_node_circuit_with_extras(store):
    c = node_circuit(["a0.h1", "m2"])
    store.put(c)
    back = store.get(c.id)
    same_circuit(back, c)
    assert back.edge_mask is None and back.node_names == ["a0.h1", "m2"]


def test_gpt2_sized_circuit_round_trips(store):
    c = edge_circuit(GPT2, keep=0.05, model="gpt2")
    store.put(c)
    same_circuit(store.get(c.id), c)


def test_put_is_idempotent(store):
    c = edge_circuit()
    assert store.put(c) == store.put(c) == c.id
    assert count(store) == 1
    assert store.memberships([c.id])[0].edges.size == c.n_edges


def test_put_many_stores_all_or_none(store, monkeypatch):
    import circat.service.stores.neo4j as neo4j_module
    import circat.service.stores.sqlite as sqlite_module

    a, b = edge_circuit(seed=1), edge_circuit(seed=2)
    assert store.put_many([a]) == [a.id]
    c = edge_circuit(seed=3)
    # a is stored already; b's edge write is the first call, c's the second (SQLite: rows of nodes and edges)
    module, name, failing = ((neo4j_module, "_link_edges", 1) if isinstance(store, neo4j_module.Neo4jStore)
                             else (sqlite_module, "_rows", 3))
    real, calls = getattr(module, name), iter(range(10**6))

    def fail_on_the_third_circuit(*args):
        if next(calls) == failing:
            raise RuntimeError("injected failure in the third circuit")
        return real(*args)

    monkeypatch.setattr(module, name, fail_on_the_third_circuit)
    with pytest.raises(RuntimeError, match="injected"):
        store.put_many([a, b, c])
    monkeypatch.undo()
    assert count(store) == 1
    assert store.put_many([a, b, c]) == [a.id, b.id, c.id]
    assert count(store) == 3


def test_get_unknown_id_is_not_found(store):
    with pytest.raises(NotFound, match="nope"):
        store.get("nope")


def test_list_filters_and_pages(store):
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    circuits = [edge_circuit(seed=i, task="a" if i % 2 else "b") for i in range(5)]
    for i, c in enumerate(circuits):
        object.__setattr__(c.provenance, "created_at", t0 + timedelta(hours=i))
        store.put(c)
    items, total = store.summaries(CircuitFilter(task="a"))
    assert total == 2 and {s.task for s in items} == {"a"}
    page, total = store.summaries(CircuitFilter(), limit=2, offset=1)
    assert total == 5 and [s.id for s in page] == [circuits[3].id, circuits[2].id]
    best, _ = store.summaries(CircuitFilter(min_faithfulness=0.53))
    assert {s.id for s in best} == {circuits[3].id, circuits[4].id}
    assert store.summaries(CircuitFilter(model="other"))[1] == 0
    s = page[0]
    assert (s.n_edges, s.n_nodes, s.method, s.task_family) == (circuits[3].n_edges, circuits[3].n_nodes, "eap", "fam")


def test_delete_removes_and_reports_missing(store):
    a, b = edge_circuit(seed=1), edge_circuit(seed=2)
    store.put(a), store.put(b)
    store.delete(a.id)
    assert count(store) == 1
    with pytest.raises(NotFound):
        store.get(a.id)
    with pytest.raises(NotFound):
        store.delete(a.id)
    same_circuit(store.get(b.id), b)


def test_memberships_name_missing_ids(store):
    c = edge_circuit()
    store.put(c)
    with pytest.raises(NotFound, match="'ghost'"):
        store.memberships([c.id, "ghost"])


def test_containing_finds_circuits_by_node_and_edge(store):
    a = node_circuit(["a0.h1", "m2"], task="x")
    b = node_circuit(["a0.h1"], task="y")
    store.put(a), store.put(b)
    g = a.graph
    assert store.containing("tiny", g.node_id("a0.h1"), Level.NODE) == sorted([a.id, b.id])
    assert store.containing("tiny", g.node_id("m2"), Level.NODE) == [a.id]
    e = edge_circuit(seed=4)
    store.put(e)
    first = int(np.flatnonzero(e.edge_mask)[0])
    assert store.containing("tiny", first, Level.EDGE) == [e.id]


def test_models_are_registered_with_their_shape(store):
    store.put(edge_circuit())
    assert store.models() == ["tiny"]
    assert store.model_shape("tiny") == SMALL
    assert store.model_shape("none") is None


def test_bad_circuit_is_refused_whole_and_changes_nothing(store):
    cat = Catalogue(store)
    bad = CircuitDocument(model="tiny", shape=SMALL.__dict__, task="t", method="m", nodes={"a0.h0": {}},
                          edges={"a0.h0->a1.h0<q>": {"score": 1.0}, "a2.h0->a0.h0<q>": {}, "m9->logits": {}})
    with pytest.raises(CircuitInvalid) as err:
        cat.add_document(bad)
    assert len(err.value.problems) == 2
    assert count(store) == 0 and store.models() == []


def test_registered_shape_is_enforced(store):
    cat = Catalogue(store)
    store.put(edge_circuit())
    with pytest.raises(CircuitInvalid, match="registered with shape"):
        cat.add_document(CircuitDocument(model="tiny", shape={"n_layers": 4, "n_heads": 2}, task="t",
                                         method="m", nodes={"a3.h0": {}}))
    assert count(store) == 1


def test_literature_known_answers(store):
    cat = Catalogue(store)
    ids = {d.task: cat.add_document(d) for d in literature_documents()}
    four = [ids[t] for t in ("numerals", "number-words", "months", "greater-than")]
    (shared,) = cat.consensus(four)
    assert set(shared.support) == {"a6.h1", "a8.h8", "a9.h1", "m8", "m9", "m10"}
    (ioi_months,) = cat.overlap(ids["ioi"], ids["months"])
    assert ioi_months.shared == ["a0.h1", "a7.h9", "a10.h7"]
    assert cat.containing("gpt2", "a9.h1")[1] == sorted(four)


def test_both_stores_give_identical_answers(sqlite_store, neo4j_store):
    answers = []
    for s in (sqlite_store, neo4j_store):
        cat = Catalogue(s)
        ids = [s.put(edge_circuit(GPT2, seed=i, keep=0.05, model="gpt2")) for i in range(4)]
        ids.append(s.put(node_circuit(["a9.h1", "a0.h1", "m3"], GPT2, model="gpt2")))
        answers.append((
            cat.overlap(ids[0], ids[1]), cat.consensus(ids[:4], 2), cat.matrix(ids),
            cat.difference(ids[0], ids[4]), cat.containing("gpt2", "a9.h1"),
            [m.nodes.tolist() for m in s.memberships(ids)],
        ))
    assert answers[0] == answers[1]


def test_a_write_that_fails_midway_leaves_no_partial_circuit(store, monkeypatch):
    import circat.service.stores.neo4j as neo4j_module
    import circat.service.stores.sqlite as sqlite_module

    def fail_on_edges(*args, **kwargs):
        raise RuntimeError("injected failure while writing edges")

    if isinstance(store, neo4j_module.Neo4jStore):
        real = neo4j_module._link_edges

        def after_edges(*args):  # the edges (and their new Edge nodes) written, then the failure
            real(*args)
            fail_on_edges()

        monkeypatch.setattr(neo4j_module, "_link_edges", after_edges)
    else:
        real_rows = sqlite_module._rows
        calls = iter([real_rows, fail_on_edges])
        monkeypatch.setattr(sqlite_module, "_rows", lambda *a: next(calls)(*a))
    c = edge_circuit()
    with pytest.raises(RuntimeError, match="injected"):
        store.put(c)
    monkeypatch.undo()
    assert count(store) == 0
    with pytest.raises(NotFound):
        store.get(c.id)
    assert store.put(c) == c.id
    same_circuit(store.get(c.id), c)


def test_parallel_writers_of_one_model_neither_fail_nor_duplicate(store):
    """Four writers, each with its own connection, store overlapping sets of circuits of a model
    that is new to the store, all at once: every circuit is stored once and the model once."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from circat.service.stores.neo4j import Neo4jStore

    writers, per_writer = 4, 6
    start = Barrier(writers)

    def write(w: int) -> list[str]:
        own = Neo4jStore(store.uri) if isinstance(store, Neo4jStore) else SqliteStore(
            store.engine.url.render_as_string(hide_password=False))
        try:
            start.wait()
            return [cid for s in range(w * 3, w * 3 + per_writer) for cid in own.put_many([edge_circuit(seed=s)])]
        finally:
            own.close()

    with ThreadPoolExecutor(writers) as pool:
        stored = [cid for ids in pool.map(write, range(writers)) for cid in ids]
    distinct = {edge_circuit(seed=s).id for s in range((writers - 1) * 3 + per_writer)}
    assert set(stored) == distinct
    assert count(store) == len(distinct)
    assert store.models() == ["tiny"]


def test_a_model_shape_is_checked_under_the_write_lock(store):
    """Two circuits of a new model with different shapes in one transaction: the store itself refuses
    the second (the catalogue's check ran before either was stored) and keeps neither."""
    a, b = edge_circuit(model="new"), edge_circuit(ModelShape(2, 2, False, 16), model="new")
    with pytest.raises(CircuitInvalid, match="registered with shape"):
        store.put_many([a, b])
    assert count(store) == 0 and store.models() == []


def test_batch_refuses_a_bad_circuit_alone(store):
    """A batch stores every good circuit and reports each bad one at its place: refused by validation,
    passed in as an error, or failing inside a shared transaction (rolled back alone)."""
    cat = Catalogue(store)
    good = [edge_circuit(seed=s) for s in range(5)]
    conflicting = edge_circuit(ModelShape(2, 2, False, 16), seed=9)  # model "tiny" gets SMALL first
    infinite = edge_circuit(seed=7)
    infinite.edge_scores[0] = np.inf
    read_error = ValueError("file x.json: not a JSON document")
    items = [good[0], conflicting, good[1], infinite, read_error, good[2], good[3], good[0], good[4]]
    out = cat.add_batch(items, per_transaction=4)
    assert [(o.id, o.new) if isinstance(o, Stored) else type(o).__name__ for o in out] == [
        (good[0].id, True), "CircuitInvalid", (good[1].id, True), "CircuitInvalid", "ValueError", (good[2].id, True),
        (good[3].id, True), (good[0].id, False), (good[4].id, True)]
    assert "registered with shape" in str(out[1]) and "infinite" in str(out[3]) and out[4] is read_error
    assert count(store) == 5
    for c in good:
        same_circuit(store.get(c.id), c)
    assert cat.add_batch(good, per_transaction=2) == [Stored(c.id, False) for c in good] and count(store) == 5


def _evaluation(circuits: tuple[str, ...], task: str = "months", mode: str = "keep", value: float = 0.8,
                expression: str | None = None) -> EvaluationRecord:
    return EvaluationRecord(model="tiny", task=task, expression=expression or " & ".join(circuits) or "m1",
                            circuits=circuits, mode=mode, level="node", metric="logit_diff", ablation="resample",
                            per_position=False, n_prompts=16, seed=0, value=value, metric_value=2.0,
                            full_metric=3.0, empty_metric=0.5)


def test_evaluations_round_trip_are_idempotent_and_go_with_their_circuits(store):
    cat = Catalogue(store)
    a, b = cat.add(edge_circuit(seed=1)), cat.add(edge_circuit(seed=2))
    with_interval = EvaluationRecord(**{**_evaluation((a, b), task="ioi", mode="knockout", value=0.3).__dict__,
                                        "low": 0.21, "high": 0.38})
    records = [_evaluation((a,)), with_interval, _evaluation(())]
    assert [s.new for s in cat.add_evaluations(records)] == [True, True, True]
    assert [s.new for s in cat.add_evaluations([*records[:1], _evaluation((a,), value=0.1)])] == [False, False]
    got, total = cat.evaluations()
    assert total == 3 and {r.id for r in got} == {r.id for r in records}
    back = {r.id: r for r in got}
    for r in records:
        stored = back[r.id]
        assert stored.circuits == r.circuits and stored.value == r.value and stored.per_position is False
        assert (stored.low, stored.high) == (r.low, r.high)  # the interval, or None, alike on both stores
        assert abs((stored.created_at - r.created_at).total_seconds()) < 1e-3
    assert {r.task for r in cat.evaluations(EvaluationFilter(circuit=b))[0]} == {"ioi"}
    assert cat.evaluations(EvaluationFilter(task="months", min_value=0.5))[1] == 2
    assert cat.evaluations(EvaluationFilter(task="months", min_value=0.9))[1] == 0
    assert cat.evaluations(EvaluationFilter(mode="knockout", model="tiny"))[1] == 1
    missing = "c" + "9" * 23
    with pytest.raises(NotFound, match=missing):
        cat.add_evaluations([_evaluation((a,), task="other"), _evaluation((missing,))])
    assert cat.evaluations()[1] == 3  # nothing of the refused call was stored
    store.delete(a)
    assert [r.circuits for r in cat.evaluations()[0]] == [()]  # evaluations that read a deleted circuit go with it


def test_a_sqlite_catalogue_from_before_evaluation_intervals_still_opens(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = SqliteStore(url)
    a = Catalogue(store).add(edge_circuit(seed=1))
    Catalogue(store).add_evaluations([_evaluation((a,))])
    with store.engine.begin() as conn:  # the evaluations table as the code before intervals made it
        conn.exec_driver_sql("ALTER TABLE evaluations DROP COLUMN low")
        conn.exec_driver_sql("ALTER TABLE evaluations DROP COLUMN high")
        conn.exec_driver_sql("PRAGMA user_version = 0")  # and recorded no schema version
    store.close()
    reopened = SqliteStore(url)
    (old,), total = Catalogue(reopened).evaluations()
    assert total == 1 and old.value == 0.8 and (old.low, old.high) == (None, None)
    later = EvaluationRecord(**{**_evaluation((a,), task="ioi").__dict__, "low": 0.7, "high": 0.9})
    Catalogue(reopened).add_evaluations([later])
    assert {(r.task, r.low) for r in Catalogue(reopened).evaluations()[0]} == {("months", None), ("ioi", 0.7)}
    reopened.close()


def _stability(circuits: list, spec: str = '{"resamples":3}') -> StabilityRecord:
    groups = [circuits[i::2] for i in range(2)]  # two levels, the resamples' circuits of each
    levels = tuple(level_stability(key, [Membership.of(c) for c in group])
                   for key, group in zip(("0.8", "0.9"), groups, strict=True))
    return StabilityRecord("tiny", "t", "eap", spec, (0, 1, 2), levels)


def test_stability_summaries_round_trip_are_idempotent_and_go_with_their_circuits(store):
    cat = Catalogue(store)
    circuits = [edge_circuit(seed=s) for s in range(6)]
    cat.add_many(circuits)
    record = _stability(circuits)
    assert cat.add_stability(record) == Stored(record.id, True)
    assert cat.add_stability(record) == Stored(record.id, False)
    back = cat.stability(record.id)
    assert back.view() | {"created_at": None} == record.view() | {"created_at": None}
    assert abs((back.created_at - record.created_at).total_seconds()) < 1e-3
    assert back.levels[1].circuits == tuple(c.id for c in circuits[1::2])  # resample order kept
    assert cat.stability(circuits[3].id).id == record.id  # found by any of its circuits
    other = _stability([*circuits[:4], edge_circuit(seed=9), circuits[5]], spec='{"resamples":3,"seed":1}')
    missing = other.levels[0].circuits[2]
    with pytest.raises(NotFound, match=missing):
        cat.add_stability(other)
    assert cat.stabilities()[1] == 1  # nothing of the refused record was stored
    with pytest.raises(NotFound, match="stability"):
        cat.stability("s" + "0" * 23)
    store.put(edge_circuit(seed=9))
    cat.add_stability(other)
    assert [r.id for r in cat.stabilities(circuits[0].id)[0]] == sorted(
        [record.id, other.id], key=lambda i: (i != other.id))  # newest first
    assert cat.stabilities(circuits[5].id, limit=1)[1] == 2
    store.delete(circuits[4].id)  # in the first summary only
    assert [r.id for r in cat.stabilities()[0]] == [other.id]  # a summary goes with any of its circuits
