"""Validation gate and exchange formats: refusals name every problem; MIB round trip is lossless."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from circat.service.documents import (
    CircuitDocument,
    MibDocument,
    circuit_from_document,
    document_from_circuit,
    mib_from_circuit,
    mib_to_document,
)
from circat.service.errors import CircuitInvalid
from circat.service.schema_export import SCHEMAS
from circat.service.schema_files import schema_dir
from circat.service.types import ModelShape
from tests.helpers import GPT2, SMALL, edge_circuit, mib_file, same_circuit


def doc(**kw) -> CircuitDocument:
    base = {"model": "tiny", "shape": SMALL.__dict__, "task": "t", "method": "m", "nodes": {"a0.h0": {}}}
    return CircuitDocument.model_validate(base | kw)


def test_every_problem_is_named_at_once():
    bad = doc(
        nodes={"a0.h0": {}, "a9.h9": {}, "a0.h1": {"score": float("inf")}},
        edges={"a1.h0->a0.h0<q>": {}, "a0.h0->a1.h0": {}, "input->a0.h1<k>": {"score": float("nan")},
               "input->a1.h1<v>": {"score": 0.5}},
    )
    with pytest.raises(CircuitInvalid) as err:
        circuit_from_document(bad)
    text = "\n".join(err.value.problems)
    assert len(err.value.problems) == 5
    for needle in ("'a9.h9'", "'a0.h1' has a non-finite score", "'a1.h0->a0.h0<q>'", "'a0.h0->a1.h0'",
                   "'input->a0.h1<k>' has a non-finite score"):
        assert needle in text


def test_unknown_model_shape_is_refused():
    with pytest.raises(CircuitInvalid, match="unknown model shape for 'mystery'"):
        circuit_from_document(doc(model="mystery", shape=None))


def test_known_model_needs_no_shape():
    c = circuit_from_document(doc(model="gpt2", shape=None, nodes={"a9.h1": {}}))
    assert c.shape == ModelShape(12, 12, False, 768)


def test_registered_shape_conflict_is_refused():
    with pytest.raises(CircuitInvalid, match="registered with shape"):
        circuit_from_document(doc(), lookup=lambda m: ModelShape(4, 4))


def test_empty_circuit_is_refused():
    with pytest.raises(CircuitInvalid, match="empty"):
        circuit_from_document(doc(nodes={"a0.h0": {"in_graph": False}}))


def test_non_finite_faithfulness_is_refused():
    with pytest.raises(CircuitInvalid, match="faithfulness"):
        circuit_from_document(doc(faithfulness=float("nan")))


def test_edge_circuits_include_their_endpoints():
    c = circuit_from_document(doc(nodes={}, edges={"a0.h1->m2": {"score": 1.0}}))
    assert c.node_names == ["a0.h1", "m2"]
    assert c.n_edges == 1


def test_id_is_deterministic_and_ignores_creation_time():
    a = circuit_from_document(doc(created_at="2024-01-01T00:00:00Z"))
    b = circuit_from_document(doc(created_at="2025-06-01T00:00:00Z"))
    c = circuit_from_document(doc(task="other"))
    assert a.id == b.id != c.id


@pytest.mark.parametrize("shape", [SMALL, GPT2])
def test_mib_round_trip_is_lossless(shape):
    original = mib_file(shape, seed=3)
    original["nodes"]["a0.h0"] = {"in_graph": True, "score": 0.25, "neurons": [True, False],
                                  "neurons_scores": [0.1, None]}
    original["cfg"]["n_key_value_heads"] = shape.n_heads
    c = circuit_from_document(mib_to_document(MibDocument.model_validate(original), "m", "t", "eap-ig"))
    assert mib_from_circuit(c) == original
    assert json.loads(json.dumps(mib_from_circuit(c))) == original


def test_old_eap_ig_files_with_boolean_nodes_import():
    f = mib_file(SMALL)
    f["nodes"] = {n: v["in_graph"] for n, v in f["nodes"].items()}
    c = circuit_from_document(mib_to_document(MibDocument.model_validate(f), "m", "t", "eap"))
    assert c.n_edges == sum(e["in_graph"] for e in f["edges"].values())


def test_our_document_round_trips():
    c = edge_circuit(score_all=True)
    same_circuit(circuit_from_document(document_from_circuit(c)), c)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_files_match_the_models(name):
    on_disk = json.loads((schema_dir() / name).read_text())
    assert on_disk == SCHEMAS[name].model_json_schema(), "regenerate with: python -m circat.service.schema_export"


def test_a_circuit_file_validates_against_the_published_schema():
    schema = json.loads((schema_dir() / "circuit.schema.json").read_text())
    body = document_from_circuit(edge_circuit()).model_dump(mode="json", exclude_none=True)
    jsonschema.validate(body, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**body, "nodes": "a0.h0"}, schema)


def test_scores_outside_the_graph_survive():
    c = edge_circuit(score_all=True)
    back = circuit_from_document(document_from_circuit(c))
    assert np.isfinite(back.edge_scores).all()


def test_the_in_memory_gate_refuses_what_the_document_gate_refuses():
    from dataclasses import replace

    from circat.service.documents import check_circuit
    from circat.service.errors import LimitExceeded
    from circat.service.limits import Limits

    good = edge_circuit()
    assert check_circuit(good) is good
    inf = replace(good, edge_scores=np.where(good.edge_mask, np.inf, np.nan))
    with pytest.raises(CircuitInvalid, match="infinite"):
        check_circuit(inf)
    with pytest.raises(CircuitInvalid):
        circuit_from_document(document_from_circuit(inf))
    with pytest.raises(CircuitInvalid, match="registered with shape"):
        check_circuit(good, lambda _: ModelShape(5, 5))
    with pytest.raises(LimitExceeded, match="CIRCAT_MAX_LAYERS"):
        check_circuit(good, limits=Limits(max_layers=2))
    no_ends = replace(good, node_mask=np.zeros_like(good.node_mask))
    with pytest.raises(CircuitInvalid, match="end of an edge"):
        check_circuit(no_ends)
    nan_param = replace(good, provenance=replace(good.provenance, params={"x": float("nan")}))
    with pytest.raises(CircuitInvalid, match="non-finite"):
        check_circuit(nan_param)
    wrong_size = replace(good, edge_mask=good.edge_mask[:-1])
    with pytest.raises(CircuitInvalid, match="do not match the graph"):
        check_circuit(wrong_size)
