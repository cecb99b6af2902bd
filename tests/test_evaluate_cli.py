"""``circat evaluate`` on the toy model: ids, expressions and item files, both modes, storing, clear refusals."""

from __future__ import annotations

import json

from circat.service.catalogue import Catalogue
from circat.service.stores import open_store
from tests.helpers import edge_circuit
from tests.test_discover_cli import run


def test_evaluate_discovered_circuits_and_expressions(tmp_path):
    found = json.loads(run("discover", "--model", "toy", "--task", "months", "--method", "eap", "--n", "8",
                           "--threshold", "0.8", "--json").stdout)["circuits"][0]
    items = tmp_path / "items.txt"
    items.write_text("a3.h0, m3\nm2\n")
    out = json.loads(run("evaluate", found["id"], f"{found['id']} & heads(L2-L3)", f"@{items}", "--model", "toy",
                         "--task", "months", "--n", "8", "--json").stdout)
    own, part, listed = out["results"]
    assert own["value"] == found["faithfulness"] and own["level"] == "edge" and own["edges"] == found["edges"]
    assert part["level"] == "node" and part["edges"] is None and listed["components"] == 3
    assert out["metric"] == "logit_diff" and out["n_prompts"] == 8 and own["full_metric"] > own["empty_metric"]
    gone = json.loads(run("evaluate", found["id"], "--model", "toy", "--task", "greater-than", "--n", "8",
                          "--mode", "knockout", "--ablation", "zero", "--json", "--save").stdout)
    assert gone["metric"] == "prob_diff" and gone["results"][0]["mode"] == "knockout"
    stored = json.loads(run("export", gone["results"][0]["id"], "--format", "circat").stdout)
    assert stored["method"] == "expression" and stored["params"]["derived_from"] == [found["id"]]
    assert stored["task"] == "greater-than" and "faithfulness" not in stored  # knockout is no faithfulness


def test_evaluate_refuses_bad_expressions_and_other_models(tmp_path):
    with open_store() as store:
        other = Catalogue(store).add(edge_circuit())  # a circuit of the model "tiny"
    bad = json.loads(run("evaluate", f"{other} & heads(L1)", "--model", "toy", "--task", "months", "--json",
                         ok=False).stdout)
    assert "another model than 'toy'" in bad["error"] and other in bad["error"]
    assert "position 6" in run("evaluate", "a1.h0 ? m2", "--model", "toy", "--task", "months", ok=False).output
    missing = run("evaluate", "c" + "1" * 23, "--model", "toy", "--task", "months", ok=False).output
    assert "no circuit with id" in missing
    empty = run("evaluate", "m1 - m1", "--model", "toy", "--task", "months", "--save", "--json", ok=False).stdout
    assert "selects nothing" in json.loads(empty)["error"]
    assert "expression file not found" in run("evaluate", "@nope.txt", "--model", "toy", "--task", "months",
                                              ok=False).output


def test_evaluations_are_recorded_once_and_listed_by_cli_and_rest():
    from fastapi.testclient import TestClient

    from circat.service.api.app import create_app

    args = ["evaluate", "heads(L2-L3) | m3", "layer(1)", "--model", "toy", "--task", "months", "--n", "8", "--json"]
    first = json.loads(run(*args).stdout)["results"]
    again = json.loads(run(*args).stdout)["results"]
    assert [r["evaluation"] for r in first] == [r["evaluation"] for r in again]
    listed = json.loads(run("evaluations", "--task", "months", "--json").stdout)
    assert listed["total"] == 2 and {r["expression"] for r in listed["items"]} == {"(heads(L2-L3) | m3)", "layer(L1)"}
    run("evaluate", "layer(1)", "--model", "toy", "--task", "months", "--n", "8", "--mode", "knockout")
    with open_store() as store:
        api = TestClient(create_app(store))
        page = api.get("/evaluations", params={"mode": "knockout"}).json()
        assert page["total"] == 1 and page["items"][0]["expression"] == "layer(L1)"
        assert api.get("/evaluations", params={"min_value": 2}).json()["total"] == 0
        assert api.get("/evaluations", params={"circuit": "nope"}).status_code == 422


def test_the_transfer_matrix_has_each_circuit_on_its_own_task_on_the_diagonal():
    found = {t: json.loads(run("discover", "--model", "toy", "--task", t, "--method", "ablation", "--threshold", "0.8",
                               "--n", "8", "--json").stdout)["circuits"][0] for t in ("numerals", "ioi")}
    out = json.loads(run("transfer", "--model", "toy", "--method", "ablation", "--task", "numerals", "--task", "ioi",
                         "--task", "months", "--expression", "layer(3)", "--n", "8", "--json").stdout)
    rows = {r["expression"]: r for r in out["rows"]}
    assert out["tasks"] == ["numerals", "ioi", "months"] and len(rows) == 3
    for task, circuit in found.items():
        row = rows[circuit["id"]]
        assert row["own_task"] == task and row["values"][task] == circuit["faithfulness"]
        assert set(row["values"]) == {"numerals", "ioi", "months"}
    assert rows["layer(L3)"]["own_task"] is None
    assert json.loads(run("evaluations", "--json").stdout)["total"] == 9
    assert "no circuits of 'toy' stored by eap" in run("transfer", "--model", "toy", "--method", "eap", ok=False).output


def test_components_write_their_report_and_extend_grows_edges(tmp_path):
    found = json.loads(run("discover", "--model", "toy", "--task", "months", "--method", "eap", "--n", "8",
                           "--threshold", "0.8", "--json").stdout)["circuits"][0]
    out = json.loads(run("evaluate", f"{found['id']} & heads(all)", "--model", "toy", "--task", "numerals",
                         "--n", "8", "--components", "--report-out", str(tmp_path / "r.html"), "--json").stdout)
    html = (tmp_path / "r.html").read_text()
    assert out["report"] == str(tmp_path / "r.html") and found["id"] in html and 'data-group="drop"' in html
    assert all(name in html for name in out["removed"])
    grown = json.loads(run("extend", "input->a3.h0<v>, a3.h0->logits", "--model", "toy", "--task", "months",
                           "--level", "edge", "--threshold", "0.3", "--candidates", "8", "--n", "8",
                           "--json").stdout)
    assert grown["level"] == "edge" and grown["reached"] and "->" in grown["steps"][1]["added"]
    stored = json.loads(run("export", grown["id"], "--format", "circat").stdout)
    assert stored["method"] == "extend" and stored["params"]["candidates"] == 8 and stored["edges"]
