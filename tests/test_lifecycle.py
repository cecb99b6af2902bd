"""Moving a catalogue: ``circat copy`` between real stores (killed and rerun, under live writes), dumps and
restores (round trip through Neo4j, hostile archives), and pruning job history."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from circat.service.documents import document_from_circuit
from circat.service.errors import SchemaMismatch
from circat.service.jobs.spec import DiscoverySpec
from circat.service.jobs.store import JobStatus, JobStore
from circat.service.lifecycle.archive import ArchiveInvalid, dump, restore
from circat.service.lifecycle.copy import copy_catalogue
from circat.service.lifecycle.records import Part, circuit_ids, inventory
from circat.service.stores.base import CircuitFilter, CircuitStore, EvaluationFilter
from circat.service.stores.neo4j import Neo4jStore
from circat.service.stores.sqlite import SqliteStore
from circat.workers.cli import app
from tests.conftest import neo4j_uri, wipe_neo4j
from tests.helpers import edge_circuit
from tests.live_server import live_server
from tests.servers import stop, wait_until
from tests.test_migrations import FIXTURES, reads_back

runner = CliRunner()
V0_CIRCUITS = 13
"""the v0 fixture: 5 literature circuits and 8 toy circuits of six methods"""
V0_COUNTS = {"circuits": V0_CIRCUITS, "evaluations": 2, "stability": 1}


def v0_catalogue(tmp_path: Path) -> SqliteStore:
    """The v0 fixture catalogue (literature, six methods' circuits, evaluations, a stability summary)."""
    path = tmp_path / "source.db"
    shutil.copy(FIXTURES / "v0" / "catalogue.db", path)
    return SqliteStore(f"sqlite:///{path}")


def fresh_neo4j() -> Neo4jStore:
    uri = neo4j_uri()
    wipe_neo4j(uri)
    return Neo4jStore(uri)


def views(store: CircuitStore) -> dict:
    return {m: i.view() for m, i in inventory(store).items()}


def count(store: CircuitStore) -> int:
    return store.summaries(CircuitFilter(), limit=1)[1]


@pytest.mark.neo4j
def test_copy_sqlite_to_neo4j_and_back_verifies_and_reads_back_identical(tmp_path):
    source, neo = v0_catalogue(tmp_path), fresh_neo4j()
    report = copy_catalogue(source, neo)
    assert report.verified and report.copied == V0_COUNTS
    assert set(report.source) == {"gpt2", "toy"}
    again = copy_catalogue(source, neo)
    assert again.verified and sum(again.copied.values()) == 0
    assert again.present == V0_COUNTS
    laptop = SqliteStore(f"sqlite:///{tmp_path / 'laptop.db'}")
    assert copy_catalogue(neo, laptop).verified
    reads_back(neo, "v0")
    reads_back(laptop, "v0")
    assert views(laptop) == views(source)


def test_copy_of_some_parts_verifies_those_parts(tmp_path):
    source = v0_catalogue(tmp_path)
    target = SqliteStore(f"sqlite:///{tmp_path / 'target.db'}")
    report = copy_catalogue(source, target, (Part.CIRCUITS,))
    assert report.verified and report.copied == {"circuits": V0_CIRCUITS, "evaluations": 0, "stability": 0}
    assert target.evaluations(EvaluationFilter())[1] == 0 and target.stabilities()[1] == 0


def random_catalogue(path: Path, n: int) -> SqliteStore:
    store = SqliteStore(f"sqlite:///{path}")
    circuits = [edge_circuit(seed=i, task=f"t{i % 5}") for i in range(n)]
    for i in range(0, n, 100):
        store.write_many(circuits[i:i + 100])
    return store


CLI = [sys.executable, "-c", "from circat.workers.cli import main; main()"]


@pytest.mark.neo4j
def test_copy_killed_at_a_random_point_then_rerun_ends_complete_without_duplicates(tmp_path):
    source_path = tmp_path / "big.db"
    random_catalogue(source_path, 300).close()
    target = fresh_neo4j()
    args = [*CLI, "copy", "--from", f"sqlite:///{source_path}", "--to", neo4j_uri(), "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: count(target) > 0, 60, "the copy's first batch")
    time.sleep(random.Random().uniform(0, 0.5))
    stop(proc, signal.SIGKILL)
    killed_at = count(target)
    assert killed_at < 300, "the kill should land before the copy ends (make the source larger)"
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = json.loads(rerun.stdout)
    assert report["verified"] and report["copied"]["circuits"] == 300 - killed_at
    assert report["already_present"]["circuits"] == killed_at
    with target.driver.session() as s:
        assert s.run("MATCH (c:Circuit) RETURN count(c) AS n, count(DISTINCT c.id) AS d").single().values() == [
            300, 300]


def test_copy_while_the_api_writes_to_the_source_loses_nothing_silently(tmp_path):
    source_path = tmp_path / "live.db"
    random_catalogue(source_path, 120).close()
    posted: list[str] = []
    failures: list[str] = []
    with live_server(f"sqlite:///{source_path}", tmp_path / "serve.log") as server:
        done = threading.Event()

        def write_and_read() -> None:
            seed = 10_000
            while not done.is_set():
                doc = document_from_circuit(edge_circuit(seed=seed, task="live")).model_dump(mode="json")
                r = httpx.post(f"{server.url}/circuits", json=doc, timeout=30)
                (posted.append(r.json()["id"]) if r.status_code in (200, 201) else failures.append(r.text))
                if httpx.get(f"{server.url}/circuits?limit=5", timeout=30).status_code != 200:
                    failures.append("read failed")
                seed += 1

        writer = threading.Thread(target=write_and_read)
        writer.start()
        wait_until(lambda: len(posted) >= 3, 30, "the API's first writes")
        try:
            report = copy_catalogue(SqliteStore(f"sqlite:///{source_path}"),
                                    SqliteStore(f"sqlite:///{tmp_path / 'target.db'}"))
        finally:
            done.set()
            writer.join()
    assert not failures, failures[:3]
    target_ids = {c for c, _ in circuit_ids(SqliteStore(f"sqlite:///{tmp_path / 'target.db'}"))}
    source_ids = {c for c, _ in circuit_ids(SqliteStore(f"sqlite:///{source_path}"))}
    not_copied = set(report.not_copied.get("circuits", []))
    # The copy's horizon: the last write it saw (copied or reported); later writes came after its final look.
    seen = [i for i, c in enumerate(posted) if c in target_ids | not_copied]
    later = set(posted[max(seen, default=-1) + 1:])
    assert source_ids - target_ids <= not_copied | later, "every source circuit copied or reported"
    assert not_copied <= set(posted), "only circuits written during the copy may be missing"
    assert len(target_ids) >= 120


@pytest.mark.neo4j
def test_dump_and_restore_round_trip_through_neo4j_gives_identical_catalogues(tmp_path):
    source = v0_catalogue(tmp_path)
    first = dump(source, tmp_path / "one.zip")
    neo = fresh_neo4j()
    restored = restore(tmp_path / "one.zip", neo)
    assert restored.stored == V0_COUNTS
    assert sum(restore(tmp_path / "one.zip", neo).stored.values()) == 0, "restoring again stores nothing"
    second = dump(neo, tmp_path / "two.zip")
    assert second["members"] == first["members"], "the same records, byte for byte"
    back = SqliteStore(f"sqlite:///{tmp_path / 'back.db'}")
    restore(tmp_path / "two.zip", back)
    reads_back(back, "v0")
    assert views(back) == views(source) == views(neo)


def test_the_committed_version_1_dump_restores(tmp_path):
    target = SqliteStore(f"sqlite:///{tmp_path / 'r.db'}")
    report = restore(FIXTURES / "v1" / "catalogue.circat.zip", target)
    assert report.stored == V0_COUNTS
    reads_back(target, "v0")


def rewrite(src: Path, dst: Path, change: dict[str, bytes | None]) -> None:
    """Copy an archive, replacing (or, with None, dropping) members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = change.get(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item.filename, data)


def hostile(kind: str, good: Path, bad: Path) -> None:
    raw = good.read_bytes()
    manifest = json.loads(zipfile.ZipFile(good).read("manifest.json"))
    lines = zipfile.ZipFile(good).read("circuits.jsonl").splitlines(keepends=True)
    if kind == "truncated":
        bad.write_bytes(raw[: len(raw) // 2])
    elif kind == "corrupted":
        offset = zipfile.ZipFile(good).getinfo("circuits.jsonl").header_offset + 200
        bad.write_bytes(raw[:offset] + bytes([raw[offset] ^ 0xFF]) + raw[offset + 1:])
    elif kind == "newer":
        rewrite(good, bad, {"manifest.json": json.dumps(manifest | {"schema_version": 99}).encode()})
    elif kind == "checksum":
        rewrite(good, bad, {"circuits.jsonl": b"".join(lines[:-1])})
    elif kind == "bad-record":
        doc = json.loads(lines[0])
        doc["nodes"]["a99.h0"] = {"in_graph": True}
        body = b"".join([(json.dumps(doc) + "\n").encode(), *lines[1:]])
        manifest["members"]["circuits.jsonl"]["sha256"] = hashlib.sha256(body).hexdigest()
        rewrite(good, bad, {"circuits.jsonl": body, "manifest.json": json.dumps(manifest).encode()})
    elif kind == "no-manifest":
        rewrite(good, bad, {"manifest.json": None})


@pytest.mark.parametrize(("kind", "problem"), [
    ("truncated", "not a readable dump"), ("corrupted", "circuits.jsonl"), ("newer", "schema version 99"),
    ("checksum", "altered or truncated"), ("bad-record", "line 1"), ("no-manifest", "not a circat dump")])
def test_a_hostile_dump_is_refused_with_its_problem_named_and_nothing_stored(tmp_path, kind, problem):
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    dump(v0_catalogue(tmp_path), good)
    hostile(kind, good, bad)
    target = SqliteStore(f"sqlite:///{tmp_path / 'target.db'}")
    with pytest.raises((ArchiveInvalid, SchemaMismatch)) as err:
        restore(bad, target)
    assert problem in str(err.value)
    assert count(target) == 0 and target.models() == [] and target.evaluations(EvaluationFilter())[1] == 0
    result = runner.invoke(app, ["restore", str(bad), "--to", f"sqlite:///{tmp_path / 'target.db'}", "--json"])
    assert result.exit_code == 1 and problem in json.loads(result.stdout)["error"]


def test_cli_copy_dump_and_restore_report_in_json(tmp_path):
    source = v0_catalogue(tmp_path)
    url = f"sqlite:///{tmp_path / 'source.db'}"
    copied = runner.invoke(app, ["copy", "--from", url, "--to", f"sqlite:///{tmp_path / 'c.db'}", "--json"])
    assert copied.exit_code == 0, copied.output
    out = json.loads(copied.stdout)
    assert out["verified"] and out["models"]["toy"]["source"] == out["models"]["toy"]["target"]
    dumped = runner.invoke(app, ["dump", str(tmp_path / "d.zip"), "--store", url, "--json"])
    assert json.loads(dumped.stdout)["members"]["circuits.jsonl"]["count"] == V0_CIRCUITS
    restored = runner.invoke(app, ["restore", str(tmp_path / "d.zip"), "--to", f"sqlite:///{tmp_path / 'r.db'}",
                                   "--json"])
    assert json.loads(restored.stdout)["stored"] == V0_COUNTS
    bad = runner.invoke(app, ["copy", "--from", url, "--to", f"sqlite:///{tmp_path / 'x.db'}", "--what", "jobs"])
    assert bad.exit_code != 0 and "circuits, evaluations, stability" in bad.output
    assert count(source) == V0_CIRCUITS


def test_jobs_prune_removes_old_finished_records_only(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    monkeypatch.setenv("CIRCAT_DATABASE_URL", url)
    jobs = JobStore(url)
    ids = [jobs.submit(DiscoverySpec.parse({"model": "toy", "task": t, "method": "eap"}))[0].id
           for t in ("ioi", "greater-than", "numerals", "months", "number-words")]
    for i in ids[:4]:
        jobs.claim(i, "w", "cpu")
    jobs.succeed(ids[0], [])
    jobs.fail(ids[1], "ValueError", "x")
    jobs.succeed(ids[2], [])
    with jobs.engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET finished_at = :t, submitted_at = :t WHERE id IN (:a, :b, :c)"),
                     {"t": "2020-01-01 00:00:00.000000", "a": ids[0], "b": ids[1], "c": ids[3]})
    refused = runner.invoke(app, ["jobs", "prune", "--older-than", "30d", "--status", "running", "--json"])
    assert refused.exit_code == 1 and "only finished jobs" in json.loads(refused.stdout)["error"]
    result = runner.invoke(app, ["jobs", "prune", "--older-than", "30d", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == {"removed": 2}
    left = {j.id: j.status for j in jobs.list()[0]}
    assert set(left) == set(ids[2:]) and left[ids[3]] is JobStatus.RUNNING, "recent and running jobs are kept"
    assert jobs.prune(timedelta(0), (JobStatus.SUCCEEDED,)) == 1


def test_a_dump_of_an_older_schema_restores_through_the_readers_of_older_lines(tmp_path):
    good, old = tmp_path / "good.zip", tmp_path / "old.zip"
    dump(v0_catalogue(tmp_path), good)
    with zipfile.ZipFile(good) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        lines = [json.loads(line) for line in zf.read("evaluations.jsonl").splitlines()]
    body = b"".join((json.dumps({k: v for k, v in d.items() if k not in ("low", "high")}) + "\n").encode()
                    for d in lines)
    manifest["schema_version"] = 0
    manifest["members"]["evaluations.jsonl"]["sha256"] = hashlib.sha256(body).hexdigest()
    rewrite(good, old, {"evaluations.jsonl": body, "manifest.json": json.dumps(manifest).encode()})
    target = SqliteStore(f"sqlite:///{tmp_path / 'target.db'}")
    assert restore(old, target).stored == V0_COUNTS
    assert all((e.low, e.high) == (None, None) for e in target.evaluations(EvaluationFilter())[0])


def test_circat_migrate_reports_what_it_migrated(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURES / "v0" / "catalogue.db", path)
    jobs = tmp_path / "jobs.db"
    shutil.copy(FIXTURES / "v0-early" / "jobs.db", jobs)
    args = ["migrate", "--store", f"sqlite:///{path}", "--jobs", f"sqlite:///{jobs}", "--json"]
    first = json.loads(runner.invoke(app, args).stdout)
    assert first == {"catalogue": {"from": 0, "to": 1}, "jobs": {"from": None, "to": "0003"}}
    assert json.loads(runner.invoke(app, args).stdout) == {"catalogue": {"from": 1, "to": 1},
                                                           "jobs": {"from": "0003", "to": "0003"}}


def test_copies_page_through_listings_larger_than_a_page(tmp_path, monkeypatch):
    monkeypatch.setattr("circat.service.lifecycle.records.PAGE", 7)
    source = random_catalogue(tmp_path / "paged.db", 30)
    assert len({c for c, _ in circuit_ids(source)}) == 30
    report = copy_catalogue(source, SqliteStore(f"sqlite:///{tmp_path / 'target.db'}"))
    assert report.verified and report.copied["circuits"] == 30
