"""Jobs through Celery on a real redis-server with real ``circat worker`` processes: the path, and its faults."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from circat.service.api.app import create_app
from circat.service.config import Settings
from circat.service.jobs.dispatch import Dispatcher
from circat.service.jobs.spec import DiscoverySpec
from circat.service.jobs.store import Job, JobStatus, JobStore
from circat.service.stores import CircuitFilter, open_store
from circat.service.types import Method
from tests.live_server import free_port
from tests.servers import Redis, pool_children, wait_until, worker_process

pytestmark = pytest.mark.redis
TINY = DiscoverySpec(model="toy", task="ioi", method=Method.EAP, n=4)


def dispatcher(env: dict[str, str]) -> Dispatcher:
    settings = replace(Settings.from_env(), broker_url=env["CIRCAT_BROKER_URL"],
                       database_url=env["CIRCAT_DATABASE_URL"], store_url=env["CIRCAT_STORE_URL"])
    return Dispatcher(JobStore(settings.database_url), settings)


def finished(jobs: JobStore, ids: list[str], timeout: float = 180) -> list[Job]:
    wait_until(lambda: all(jobs.get(i).status.finished for i in ids), timeout, f"{len(ids)} job(s)")
    return [jobs.get(i) for i in ids]


def stored_circuits(env: dict[str, str]) -> int:
    with open_store(env["CIRCAT_STORE_URL"]) as store:
        return store.summaries(CircuitFilter(), 1)[1]


def test_jobs_run_on_a_celery_worker_through_the_api(tmp_path, env):
    settings = replace(Settings.from_env(), broker_url=env["CIRCAT_BROKER_URL"],
                       database_url=env["CIRCAT_DATABASE_URL"], store_url=env["CIRCAT_STORE_URL"])
    with open_store(env["CIRCAT_STORE_URL"]) as store:
        client = TestClient(create_app(store, settings))
        assert client.get("/health").json()["broker"] == "celery"
        ok = client.post("/jobs", json=TINY.model_dump(mode="json"))
        bad = client.post("/jobs", json={**TINY.model_dump(mode="json"), "task": "words", "task_lines": [
            {"prompt": "Van done in", "answer": " zebra", "corrupted_prompt": "Hat done in", "wrong_answer": " 1"}]})
        assert ok.status_code == bad.status_code == 202
        with worker_process(tmp_path / "worker.log", **env):
            good, failed = finished(dispatcher(env).jobs, [ok.json()["id"], bad.json()["id"]])
    assert good.status is JobStatus.SUCCEEDED and good.attempts == 1 and good.worker.startswith("celery@")
    assert failed.status is JobStatus.FAILED and failed.error_type == "DiscoverError"
    assert "' zebra' is not one known token" in failed.error_message and "Traceback" not in failed.error_message
    assert stored_circuits(env) == len(good.circuit_ids)


def test_a_worker_killed_mid_job_hands_it_to_another_and_it_completes_once(tmp_path, env):
    d = dispatcher(env)
    job, _ = d.submit(DiscoverySpec(model="toy", task="months", method=Method.ABLATION, n=64,
                                    orders=("backward", "forward")))
    with worker_process(tmp_path / "w1.log", **env) as w1, worker_process(tmp_path / "w2.log", **env) as w2:
        wait_until(lambda: d.jobs.get(job.id).message == "sweep", 120, "the job to be mid-sweep")
        victim = int(d.jobs.get(job.id).worker.rsplit(":", 1)[1])
        assert victim in pool_children(w1.pid) + pool_children(w2.pid)
        os.kill(victim, signal.SIGKILL)
        (done,) = finished(d.jobs, [job.id])
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2
    assert int(done.worker.rsplit(":", 1)[1]) != victim
    assert d.jobs.list()[1] == 1 and stored_circuits(env) == len(done.circuit_ids)


def test_an_unreachable_store_fails_the_job_after_retries_and_a_resubmission_succeeds(tmp_path, env):
    d = dispatcher(env)
    down = {**env, "CIRCAT_STORE_URL": f"bolt://127.0.0.1:{free_port()}", "CIRCAT_STORE_RETRIES": "2",
            "CIRCAT_STORE_RETRY_S": "0.1"}
    job, _ = d.submit(TINY)
    with worker_process(tmp_path / "down.log", **down):
        (failed,) = finished(d.jobs, [job.id])
    assert failed.status is JobStatus.FAILED and failed.error_type == "StoreUnavailable"
    assert "after 2 retries" in failed.error_message and "unreachable" in failed.error_message
    assert stored_circuits(env) == 0
    again, new = d.submit(TINY)
    assert new and again.id != job.id
    with worker_process(tmp_path / "up.log", **env):
        (done,) = finished(d.jobs, [again.id])
    assert done.status is JobStatus.SUCCEEDED and stored_circuits(env) == len(done.circuit_ids)


def test_queued_jobs_survive_a_redis_restart(tmp_path, env, redis: Redis):
    d = dispatcher(env)
    ids = [d.submit(TINY.model_copy(update={"seed": s}))[0].id for s in range(5)]
    assert redis.queued() == 5
    redis.stop()
    redis.start()
    assert redis.queued() == 5
    with worker_process(tmp_path / "worker.log", **env):
        done = finished(d.jobs, ids)
    assert all(j.status is JobStatus.SUCCEEDED and j.attempts == 1 for j in done)


def test_fifty_jobs_on_two_workers_none_lost_none_duplicated(tmp_path, env):
    d = dispatcher(env)
    ids = [d.submit(TINY.model_copy(update={"seed": s}))[0].id for s in range(50)]
    assert len(set(ids)) == 50
    with worker_process(tmp_path / "w1.log", **env), worker_process(tmp_path / "w2.log", **env):
        done = finished(d.jobs, ids, timeout=400)
    assert all(j.status is JobStatus.SUCCEEDED and j.attempts == 1 for j in done)
    assert len({j.worker for j in done}) == 2
    assert d.jobs.list()[1] == 50


def test_a_broker_that_is_down_fails_the_submission_cleanly(tmp_path, env):
    down = {**env, "CIRCAT_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    d = dispatcher(down)
    with pytest.raises(Exception, match="unreachable"):
        d.submit(TINY)
    (job,), total = d.jobs.list()
    assert total == 1 and job.status is JobStatus.FAILED and job.error_type == "BrokerUnavailable"
    assert Path(env["CIRCAT_DATABASE_URL"].removeprefix("sqlite:///")).exists()
