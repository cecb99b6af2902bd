"""Functional runs as jobs: POST /evaluations validated before anything is queued, evaluate / extend / transfer
jobs through the embedded worker and through Celery on a real Redis, and GET /transfer from what they stored."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from circat.service.api.app import create_app
from circat.service.catalogue import Catalogue
from circat.service.jobs.store import JobStatus
from circat.service.stores import open_store
from tests.helpers import edge_circuit
from tests.servers import worker_process
from tests.test_celery_jobs import dispatcher, finished
from tests.test_discover_cli import run

SPEC = {"kind": "evaluate", "expressions": ["heads(L2-L3) | m3"], "model": "toy", "task": "months", "n": 8}


def test_submitted_specs_are_checked_before_anything_is_queued():
    with open_store() as store:
        other = Catalogue(store).add(edge_circuit())  # of the model "tiny"
        toy = Catalogue(store).add(edge_circuit(seed=4))
        api = TestClient(create_app(store))
        for bad, named in [({"expressions": ["a1.h0 ? m2"]}, "position 6"),
                           ({"expressions": ["c" + "1" * 23]}, "no circuit with id"),
                           ({"model": "/etc"}, "CIRCAT_MODEL_ROOTS"),
                           ({"kind": "transfer"}, "not task"),
                           ({"kind": "extend", "expressions": ["m1", "m2"]}, "one circuit"),
                           ({"task": "nope"}, "unknown task"),
                           ({"threshold": 0.5}, "threshold applies to extend")]:
            r = api.post("/evaluations", json=SPEC | bad)
            assert r.status_code == 422 and named in r.text, (bad, r.text)
        assert api.get("/jobs").json()["total"] == 0
        first = api.post("/evaluations", json=SPEC)
        assert first.status_code == 202 and first.headers["location"] == f"/jobs/{first.json()['id']}"
        again = api.post("/evaluations", json=SPEC)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        assert api.get("/jobs").json()["items"][0]["spec"]["kind"] == "evaluate"
        assert api.post("/evaluations", json=SPEC | {"expressions": [f"{other} & {toy}"]}).status_code == 202
        mixed = api.post("/evaluations", json=SPEC | {"expressions": [other, "c" + "a" * 23]})
        assert mixed.status_code == 422


def test_evaluate_extend_and_transfer_jobs_run_on_the_embedded_worker():
    ev = json.loads(run("evaluate", "heads(L2-L3) | m3", "--model", "toy", "--task", "months", "--n", "8",
                        "--submit", "--wait", "--json").stdout)
    assert ev["status"] == "succeeded" and len(ev["evaluation_ids"]) == 1 and ev["circuit_ids"] == []
    grown = json.loads(run("extend", "m3", "--model", "toy", "--task", "months", "--n", "8", "--threshold", "0.5",
                           "--submit", "--wait", "--json").stdout)
    assert grown["status"] == "succeeded" and len(grown["circuit_ids"]) == 1
    tr = json.loads(run("transfer", "--model", "toy", "--expression", "layer(1)", "--task", "months", "--task", "ioi",
                        "--n", "8", "--submit", "--wait", "--json").stdout)
    assert tr["status"] == "succeeded" and len(tr["evaluation_ids"]) == 4  # the extended circuit and layer(1)
    run("jobs")  # the table lists functional jobs too
    listed = json.loads(run("jobs", "--json").stdout)["items"]
    assert {j["spec"]["kind"] for j in listed} == {"evaluate", "extend", "transfer"}
    with open_store() as store:
        api = TestClient(create_app(store))
        matrix = api.get("/transfer", params={"model": "toy"}).json()
        assert matrix["tasks"] == ["ioi", "months"] and not matrix["truncated"]
        rows = {r["expression"]: r["values"] for r in matrix["rows"]}
        assert set(rows) == {"layer(L1)", grown["circuit_ids"][0], "(heads(L2-L3) | m3)"}
        assert set(rows["layer(L1)"]) == {"ioi", "months"}
        assert api.get("/transfer", params={"model": "toy", "mode": "knockout"}).json()["rows"] == []


@pytest.mark.redis
def test_a_functional_job_runs_on_a_celery_worker(tmp_path, env):
    d = dispatcher(env)
    from circat.service.jobs.evaluation import EvaluationSpec

    job, _ = d.submit(EvaluationSpec.model_validate(SPEC | {"mode": "knockout"}))
    with worker_process(tmp_path / "worker.log", **env):
        (done,) = finished(d.jobs, [job.id])
    assert done.status is JobStatus.SUCCEEDED and done.worker.startswith("celery@") and len(done.evaluation_ids) == 1
    with open_store(env["CIRCAT_STORE_URL"]) as store:
        (record,), _ = Catalogue(store).evaluations()
    assert record.mode == "knockout" and record.id == done.evaluation_ids[0]
