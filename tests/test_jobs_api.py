"""The job API and the embedded worker: submit, follow, list, cancel; end to end through ``circat serve``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from circat.service.api.app import create_app
from tests.live_server import live_server
from tests.servers import wait_until
from tests.test_api import PROBLEM, settings

SPEC = {"model": "toy", "task": "ioi", "method": "eap", "n": 8}


@pytest.fixture
def client(sqlite_store) -> TestClient:
    return TestClient(create_app(sqlite_store, settings()))


def test_submit_answers_202_with_location_and_deduplicates(client):
    r = client.post("/jobs", json=SPEC)
    assert r.status_code == 202 and r.headers["location"] == f"/jobs/{r.json()['id']}"
    job = r.json()
    assert job["status"] == "queued" and job["new"] and job["spec"]["task"] == "ioi"
    again = client.post("/jobs", json=SPEC)
    assert again.status_code == 200 and again.json()["id"] == job["id"] and not again.json()["new"]
    forced = client.post("/jobs", json=SPEC, params={"force": True})
    assert forced.status_code == 202 and forced.json()["id"] != job["id"]
    assert client.get(f"/jobs/{job['id']}").json()["status"] == "queued"
    assert client.get("/jobs", params={"status": "queued"}).json()["total"] == 2


def test_bad_specs_are_422_naming_each_problem_and_queue_nothing(client):
    bad = {"model": "", "task": "nope", "method": "magic", "levels": [2], "orders": ["sideways"], "n": 0}
    r = client.post("/jobs", json=bad)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    named = r.json()["detail"]
    for field in ("model", "method", "levels", "orders", "n"):
        assert f"body.{field}" in named, field
    unknown = client.post("/jobs", json=SPEC | {"task": "nope"})
    assert unknown.status_code == 422 and "unknown task 'nope'" in unknown.text
    assert client.get("/jobs").json()["total"] == 0


def test_cancel_a_queued_job_and_unknown_ids(client):
    job = client.post("/jobs", json=SPEC).json()
    cancelled = client.delete(f"/jobs/{job['id']}").json()
    assert cancelled["status"] == "cancelled"
    assert client.post("/jobs", json=SPEC).json()["new"]  # a cancelled spec can run again
    assert client.get("/jobs/j0123456789abcdef01234567").status_code == 404
    assert client.get("/jobs/not-an-id").status_code == 422


def test_job_writes_need_the_key(sqlite_store):
    client = TestClient(create_app(sqlite_store, settings(key="k")))
    assert client.post("/jobs", json=SPEC).status_code == 401
    job = client.post("/jobs", json=SPEC, headers={"Authorization": "Bearer k"}).json()
    assert client.delete(f"/jobs/{job['id']}").status_code == 401
    assert client.get(f"/jobs/{job['id']}").status_code == 200


def test_health_reports_the_job_database(client):
    body = client.get("/health").json()
    assert body["jobs"] == "sqlite" and body["broker"] == "embedded worker"
    spec = client.get("/openapi.json").json()
    assert {"Job", "Submitted", "JobPage", "DiscoverySpec"} <= set(spec["components"]["schemas"])


def test_serve_runs_jobs_with_its_embedded_worker(tmp_path):
    store = f"sqlite:///{tmp_path / 'cat.db'}"
    with live_server(store, tmp_path / "serve.log", worker=True) as server, httpx.Client(base_url=server.url) as c:
        jobs = [c.post("/jobs", json=SPEC | {"seed": s}).json()["id"] for s in range(2)]
        bad = c.post("/jobs", json={**SPEC, "task": "words", "task_lines": [
            {"prompt": "Van done in", "answer": " zebra", "corrupted_prompt": "Hat done in", "wrong_answer": " 1"}]})
        jobs.append(bad.json()["id"])
        wait_until(lambda: all(c.get(f"/jobs/{j}").json()["status"] in ("succeeded", "failed") for j in jobs),
                   120, "the jobs")
        ok = [c.get(f"/jobs/{j}").json() for j in jobs[:2]]
        assert all(j["status"] == "succeeded" and j["attempts"] == 1 and j["circuit_ids"] for j in ok)
        for cid in ok[0]["circuit_ids"]:
            assert c.get(f"/circuits/{cid}").json()["task"] == "ioi"
        failed = c.get(f"/jobs/{jobs[2]}").json()
        assert failed["status"] == "failed" and failed["error"]["type"] == "DiscoverError"
        assert "' zebra' is not one known token" in failed["error"]["message"]
        assert "Traceback" not in failed["error"]["message"]
        worker_pid = int(ok[0]["worker"].rsplit(":", 1)[1])
    wait_until(lambda: not Path(f"/proc/{worker_pid}").exists(), 30, "the embedded worker to exit with the server")


def test_a_job_and_circat_discover_of_one_spec_make_the_same_circuits(tmp_path):
    from typer.testing import CliRunner

    from circat.workers.cli import app

    runner = CliRunner()
    args = ["--model", "toy", "--task", "months", "--method", "eap-ig", "--n", "8", "--ig-steps", "2", "--json"]
    direct = json.loads(runner.invoke(app, ["discover", *args]).stdout)
    job = json.loads(runner.invoke(app, ["submit", *args, "--wait"]).stdout)
    assert job["status"] == "succeeded" and job["circuit_ids"] == [c["id"] for c in direct["circuits"]]


def test_the_cli_reaches_jobs_through_a_running_api(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from circat.workers.cli import app

    store = f"sqlite:///{tmp_path / 'cat.db'}"
    with live_server(store, tmp_path / "serve.log", worker=True, CIRCAT_API_KEY="k") as server:
        monkeypatch.setenv("CIRCAT_API_URL", server.url)
        monkeypatch.setenv("CIRCAT_DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")  # not used via the API
        runner = CliRunner()
        refused = runner.invoke(app, ["submit", "--model", "toy", "--task", "ioi", "--method", "eap", "--json"])
        assert refused.exit_code == 1 and "401" in refused.stdout
        monkeypatch.setenv("CIRCAT_API_KEY", "k")
        out = runner.invoke(app, ["submit", "--model", "toy", "--task", "ioi", "--method", "eap", "--n", "4",
                                  "--wait", "--json"])
        job = json.loads(out.stdout)
        assert out.exit_code == 0 and job["status"] == "succeeded"
        listed = json.loads(runner.invoke(app, ["jobs", "--json"]).stdout)
        assert [j["id"] for j in listed["items"]] == [job["id"]]
        assert json.loads(runner.invoke(app, ["cancel", job["id"], "--json"]).stdout)["status"] == "succeeded"
    assert not Path(tmp_path / "elsewhere.db").exists()


def test_a_running_job_is_cancelled_between_steps(tmp_path):
    import threading

    from circat.service.config import Settings
    from circat.service.jobs.spec import DiscoverySpec
    from circat.service.jobs.store import JobStatus
    from circat.service.types import Method
    from circat.workers.jobs.local import work
    from circat.workers.jobs.runner import WorkerContext

    ctx = WorkerContext.from_settings(Settings.from_env(), None)
    job, _ = ctx.jobs.submit(DiscoverySpec(model="toy", task="months", method=Method.ABLATION, n=64,
                                           orders=("backward", "forward")))
    runner = threading.Thread(target=work, args=(ctx,), kwargs={"until_idle": True})
    runner.start()
    wait_until(lambda: ctx.jobs.get(job.id).message == "sweep", 120, "the job to be mid-sweep")
    assert ctx.jobs.cancel(job.id).cancel_requested
    runner.join(timeout=60)
    done = ctx.jobs.get(job.id)
    assert done.status is JobStatus.CANCELLED and done.circuit_ids == [] and done.finished_at


def test_a_job_left_running_by_a_dead_embedded_worker_is_run_again():
    import socket

    from circat.service.config import Settings
    from circat.service.jobs.spec import DiscoverySpec
    from circat.service.jobs.store import JobStatus
    from circat.service.types import Method
    from circat.workers.jobs.local import work
    from circat.workers.jobs.runner import WorkerContext

    ctx = WorkerContext.from_settings(Settings.from_env(), None)
    job, _ = ctx.jobs.submit(DiscoverySpec(model="toy", task="ioi", method=Method.EAP, n=4))
    assert ctx.jobs.claim(job.id, f"{socket.gethostname()}:4194999", "cpu")  # a pid no process has
    other, _ = ctx.jobs.submit(DiscoverySpec(model="toy", task="ioi", method=Method.EAP, n=4, seed=1))
    assert ctx.jobs.claim(other.id, "celery@elsewhere:1", "cuda:0")  # not ours to judge
    assert work(ctx, until_idle=True) == 1
    done = ctx.jobs.get(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2
    assert ctx.jobs.get(other.id).status is JobStatus.RUNNING
