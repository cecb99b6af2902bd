"""One contract for the job database, on SQLite and on the real PostgreSQL the test command starts."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from circat.service.errors import NotFound, StoreUnavailable
from circat.service.jobs.spec import DiscoverySpec, TaskFileError, parse_task_lines
from circat.service.jobs.store import JobFilter, JobStatus, JobStore
from circat.service.types import Method
from tests.conftest import postgres_url

SPEC = DiscoverySpec(model="toy", task="ioi", method=Method.EAP, n=8)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def jobs(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite" else postgres_url(fresh=True)
    store = JobStore(url)
    yield store
    store.close()


def test_spec_hash_is_stable_and_canonical():
    same = DiscoverySpec.model_validate({"method": "eap", "task": "ioi", "model": "toy", "n": 8, "levels": None})
    assert same.canonical_json() == SPEC.canonical_json() and same.spec_hash() == SPEC.spec_hash()
    assert SPEC.model_copy(update={"seed": 1}).spec_hash() != SPEC.spec_hash()
    a = DiscoverySpec(model="toy", task="ioi", method=Method.EAP, levels=(0.9, 0.7, 0.9))
    assert a.levels == (0.7, 0.9)


def test_path_options_leave_older_specs_and_defaults_alone():
    assert '"paths"' not in SPEC.canonical_json()  # specs from before the path methods keep their hash
    plain = DiscoverySpec(model="toy", task="ioi", method=Method.IPE)
    assert DiscoverySpec.parse({**plain.model_dump(), "paths": {}}).spec_hash() == plain.spec_hash()
    wider = DiscoverySpec.parse({**plain.model_dump(), "paths": {"width": 4, "receivers": ["v", "q", "v"]}})
    assert wider.spec_hash() != plain.spec_hash() and wider.path_search.receivers == ("q", "v")
    with pytest.raises(ValueError, match="paths options apply to path-patching, ipe and ipe-approx, not eap"):
        DiscoverySpec.parse({**SPEC.model_dump(), "paths": {"width": 4}})


@pytest.mark.parametrize(("bad", "named"), [
    ({"task": "nope"}, "unknown task 'nope'"), ({"method": "magic"}, "method"), ({"levels": [1.5]}, "levels"),
    ({"orders": ["sideways"]}, "orders"), ({"n": 0}, "n"), ({"dtype": "int8"}, "dtype"),
    ({"task": "ioi", "task_lines": []}, "registered name"), ({"extra": 1}, "extra"),
])
def test_bad_specs_name_what_is_wrong(bad, named):
    with pytest.raises(ValueError, match=named):
        DiscoverySpec.model_validate(SPEC.model_dump() | bad)


def test_custom_task_lines_travel_in_the_spec():
    lines = parse_task_lines('{"prompt": "a", "answer": " b", "corrupted_prompt": "c", "wrong_answer": " d"}\n', "t")
    spec = DiscoverySpec(model="toy", task="mine", task_lines=lines, method=Method.EAP)
    assert DiscoverySpec.model_validate_json(spec.canonical_json()) == spec
    with pytest.raises(TaskFileError, match="t:2"):
        parse_task_lines('{"prompt": "a", "answer": "b", "corrupted_prompt": "c", "wrong_answer": "d"}\n{}', "t")


def test_submit_get_and_deduplicate(jobs):
    job, new = jobs.submit(SPEC)
    assert new and job.status is JobStatus.QUEUED and job.spec == SPEC and job.attempts == 0
    again, new_again = jobs.submit(SPEC)
    assert not new_again and again.id == job.id
    forced, forced_new = jobs.submit(SPEC, force=True)
    assert forced_new and forced.id != job.id
    assert jobs.get(job.id).spec_hash == SPEC.spec_hash()
    with pytest.raises(NotFound):
        jobs.get("jmissing")


def test_a_failed_or_cancelled_spec_can_be_submitted_again(jobs):
    job, _ = jobs.submit(SPEC)
    assert jobs.claim(job.id, "w1", "cpu")
    assert jobs.fail(job.id, "DiscoverError", "bad prompts")
    retry, new = jobs.submit(SPEC)
    assert new and retry.id != job.id
    assert jobs.cancel(retry.id).status is JobStatus.CANCELLED
    assert jobs.submit(SPEC)[1]


def test_life_of_a_job(jobs):
    job, _ = jobs.submit(SPEC)
    assert jobs.claim(job.id, "w1", "cpu") and not jobs.claim(job.id, "w2", "cpu")
    assert jobs.progress(job.id, 0.5, "scoring")
    running = jobs.get(job.id)
    assert (running.status, running.progress, running.message, running.worker, running.attempts) == (
        JobStatus.RUNNING, 0.5, "scoring", "w1", 1)
    assert jobs.succeed(job.id, ["c1", "c2"])
    done = jobs.get(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.circuit_ids == ["c1", "c2"] and done.finished_at
    assert not jobs.fail(job.id, "X", "too late")  # a finished job stays finished
    assert jobs.submit(SPEC)[0].id == job.id


def test_a_redelivered_job_is_claimed_again_and_counts_attempts(jobs):
    job, _ = jobs.submit(SPEC)
    assert jobs.claim(job.id, "w1", "cpu")
    assert not jobs.claim(job.id, "w2", "cpu")
    assert jobs.claim(job.id, "w2", "cpu", redelivered=True)
    assert jobs.get(job.id).attempts == 2 and jobs.get(job.id).worker == "w2"


def test_cancel_a_running_job_between_steps(jobs):
    job, _ = jobs.submit(SPEC)
    jobs.claim(job.id, "w1", "cpu")
    assert jobs.cancel(job.id).cancel_requested
    assert not jobs.progress(job.id, 0.7, "still going")
    assert jobs.cancelled(job.id) and jobs.get(job.id).status is JobStatus.CANCELLED


def test_claim_next_takes_the_oldest_queued_job_once(jobs):
    ids = [jobs.submit(SPEC.model_copy(update={"seed": s}))[0].id for s in range(3)]
    assert jobs.claim_next("w", "cpu").id == ids[0]
    assert jobs.claim_next("w", "cpu").id == ids[1]


def test_concurrent_claims_give_each_job_to_one_worker(jobs):
    for s in range(20):
        jobs.submit(SPEC.model_copy(update={"seed": s}))
    got: list[str] = []

    def worker(name: str) -> None:
        while (job := jobs.claim_next(name, "cpu")) is not None:
            got.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 20 == len(set(got))


def test_concurrent_identical_submissions_make_one_job(jobs):
    found: list[str] = []
    threads = [threading.Thread(target=lambda: found.append(jobs.submit(SPEC)[0].id)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 1
    assert jobs.list()[1] == 1


def test_list_filters_and_pages(jobs):
    for s in range(5):
        jobs.submit(SPEC.model_copy(update={"seed": s}))
    jobs.submit(DiscoverySpec(model="toy", task="months", method=Method.ABLATION))
    page, total = jobs.list(JobFilter(method="eap"), limit=2, offset=1)
    assert total == 5 and len(page) == 2
    assert jobs.list(JobFilter(task="months"))[1] == 1
    assert jobs.list(JobFilter(status=JobStatus.RUNNING))[1] == 0


def test_unreachable_database_is_store_unavailable():
    with pytest.raises(StoreUnavailable, match="unreachable"):
        JobStore("postgresql+psycopg://nobody@127.0.0.1:9/jobs")


def test_a_job_table_from_before_spec_summaries_gains_their_column(jobs):
    """Tables made before listings summarised specs get the column when opened; their rows are summarised on read."""
    lines = parse_task_lines('{"prompt": "a", "answer": " b", "corrupted_prompt": "c", "wrong_answer": " d"}\n', "t")
    old, _ = jobs.submit(DiscoverySpec(model="toy", task="mine", task_lines=lines, method=Method.EAP))
    with jobs.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE jobs DROP COLUMN spec_summary"))
        conn.execute(sa.text("DROP TABLE alembic_version"))  # the code of then kept no revision
    reopened = JobStore(jobs.url)
    try:
        (listed,), total = reopened.list()
        assert total == 1 and listed.id == old.id and listed.spec.custom_task.lines == 1
        assert reopened.get(old.id).spec.task_lines == lines
        _, new = reopened.submit(SPEC)
        assert new and reopened.list()[0][0].spec.custom_task is None
    finally:
        reopened.close()
