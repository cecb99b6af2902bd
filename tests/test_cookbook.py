"""Every Cypher query of schema/README.md runs on the real Neo4j and agrees with the algebra."""

from __future__ import annotations

import re

import pytest

from circat.service.catalogue import Catalogue
from circat.service.documents import CircuitDocument
from circat.service.literature import literature_documents
from circat.service.schema_files import schema_dir
from circat.service.stability import StabilityRecord, level_stability
from circat.service.stores.base import EvaluationFilter, EvaluationRecord, Membership
from circat.service.stores.neo4j import Neo4jStore
from tests.helpers import GPT2, edge_circuit

pytestmark = pytest.mark.neo4j
BLOCK = re.compile(r"<!-- cookbook: (?P<key>[\w-]+) -->\s*```cypher\n(?P<query>.*?)```", re.S)
QUERIES = {m["key"]: m["query"] for m in BLOCK.finditer((schema_dir() / "README.md").read_text())}


def run(store: Neo4jStore, key: str, **params) -> list[dict]:
    records = store.driver.execute_query(QUERIES[key], params, database_=store.database).records
    return [r.data() for r in records]


@pytest.fixture
def loaded(neo4j_store: Neo4jStore) -> tuple[Neo4jStore, Catalogue, dict[str, str]]:
    cat = Catalogue(neo4j_store)
    ids = {d.task: cat.add_document(d) for d in literature_documents()}
    return neo4j_store, cat, ids


def test_the_cookbook_has_every_query_the_issue_asks_for():
    assert set(QUERIES) >= {"shared-components", "family-consensus", "uses-head", "subgraph",
                            "edges-unique-to-task", "ranked-by-overlap", "keeps-task", "transfer-matrix",
                            "resample-frequency", "stable-core"}
    assert len(QUERIES) >= 6


def test_shared_components(loaded):
    store, cat, ids = loaded
    rows = run(store, "shared-components", a=ids["numerals"], b=ids["months"])
    assert [r["component"] for r in rows] == cat.overlap(ids["numerals"], ids["months"])[0].shared


def test_family_consensus(loaded):
    store, cat, ids = loaded
    rows = run(store, "family-consensus", model="gpt2", family="sequence-continuation")
    seq = [ids[t] for t in ("numerals", "number-words", "months")]
    (expected,) = cat.consensus(seq)
    assert {r["component"]: r["support"] for r in rows} == expected.support


def test_uses_head(loaded):
    store, cat, _ = loaded
    rows = run(store, "uses-head", model="gpt2", name="a9.h1")
    assert sorted(r["id"] for r in rows) == cat.containing("gpt2", "a9.h1")[1]
    assert [r["task"] for r in rows] == ["greater-than", "months", "number-words", "numerals"]


def test_subgraph(neo4j_store):
    c = edge_circuit(GPT2, keep=0.01, model="gpt2")
    neo4j_store.put(c)
    rows = run(neo4j_store, "subgraph", id=c.id)
    assert [r["edge"] for r in rows] == c.edge_names
    assert all(r["edge"].startswith(f"{r['source']}->{r['destination']}") for r in rows)
    assert {r["input"] for r in rows} <= {"q", "k", "v", "mlp", "logits"}


def test_edges_unique_to_task(neo4j_store):
    cat = Catalogue(neo4j_store)
    a = neo4j_store.put(edge_circuit(GPT2, seed=1, keep=0.02, model="gpt2", task="ioi"))
    b = neo4j_store.put(edge_circuit(GPT2, seed=2, keep=0.02, model="gpt2", task="greater-than"))
    rows = run(neo4j_store, "edges-unique-to-task", model="gpt2", task="ioi")
    assert [r["edge"] for r in rows] == cat.difference(a, b)["edge"]


def test_ranked_by_overlap(loaded):
    store, cat, ids = loaded
    rows = run(store, "ranked-by-overlap", id=ids["numerals"])
    order = list(ids.values())
    row = cat.matrix(order).node[order.index(ids["numerals"])]
    expected = {cid: row[i] for i, cid in enumerate(order) if cid != ids["numerals"]}
    assert {r["id"]: pytest.approx(r["jaccard"]) for r in rows} == expected
    assert rows[0]["task"] == "number-words"


def test_heads_in_every_method(loaded):
    store, cat, _ = loaded
    for method, heads in (("ablation", ["a9.h9", "a9.h6", "a10.h0", "a5.h5"]), ("eap", ["a9.h9", "a10.h0", "a0.h1"])):
        cat.add_document(CircuitDocument(model="gpt2", task="ioi", method=method,
                                         nodes={h: {} for h in heads}))
    rows = run(store, "heads-in-every-method", model="gpt2", task="ioi")
    assert [r["head"] for r in rows] == ["a9.h9", "a10.h0"]


def _record(circuit: str, task: str, value: float, mode: str = "keep") -> EvaluationRecord:
    return EvaluationRecord(model="gpt2", task=task, expression=circuit, circuits=(circuit,), mode=mode,
                            level="node", metric="logit_diff", ablation="resample", per_position=False,
                            n_prompts=64, seed=0, value=value, metric_value=value, full_metric=1.0, empty_metric=0.0)


def test_circuits_that_keep_a_task_and_the_transfer_matrix(loaded):
    store, cat, ids = loaded
    values = {("numerals", "months"): 0.85, ("months", "months"): 0.95, ("ioi", "months"): 0.1,
              ("numerals", "numerals"): 0.9}
    cat.add_evaluations([_record(ids[c], t, v) for (c, t), v in values.items()]
                        + [_record(ids["ioi"], "months", 0.9, mode="knockout")])
    rows = run(store, "keeps-task", task="months", at_least=0.8)
    expected = [e for e in cat.evaluations(EvaluationFilter(task="months", mode="keep", min_value=0.8))[0]]
    assert [(r["id"], r["keeps"]) for r in rows] == sorted(((e.circuits[0], e.value) for e in expected),
                                                           key=lambda x: (-x[1], x[0]))
    assert {r["found_for"] for r in rows} == {"numerals", "months"}
    matrix = {(r["circuit"], r["task"]): r["faithfulness"] for r in run(store, "transfer-matrix", model="gpt2")}
    assert matrix == {(ids[c], t): v for (c, t), v in values.items()}


def test_resample_frequencies_and_the_stable_core_agree_with_the_stored_summary(neo4j_store):
    cat = Catalogue(neo4j_store)
    circuits = [edge_circuit(GPT2, seed=s, keep=0.002, model="gpt2", task="months") for s in range(6)]
    cat.add_many(circuits)
    levels = tuple(level_stability(key, [Membership.of(c) for c in circuits[i::2]])
                   for i, key in enumerate(("0.8", "0.9")))
    record = StabilityRecord("gpt2", "months", "eap", '{"resamples":3}', (0, 1, 2), levels)
    cat.add_stability(record)
    for level in (0, 1):
        rows = run(neo4j_store, "resample-frequency", run=record.id, level=level)
        assert {r["component"]: r["frequency"] for r in rows} == pytest.approx(levels[level].node_frequency)
    (row,) = run(neo4j_store, "stable-core", model="gpt2")
    core = [k for k, f in levels[0].node_frequency.items() if f == 1]
    assert (row["task"], row["method"]) == ("months", "eap") and sorted(row["core"]) == sorted(core) and core
