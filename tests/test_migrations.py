"""Schema versions and migrations on real old data: catalogues and job databases written by earlier code
(``tests/fixtures/``, made by ``tests/fixtures/write_fixtures.py``) open under this code and read back the same."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from neo4j import GraphDatabase
from neo4j.time import DateTime
from sqlmodel import SQLModel

from circat.service.documents import CircuitDocument, document_from_circuit
from circat.service.errors import SchemaMismatch
from circat.service.jobs.schema import head
from circat.service.jobs.spec import DiscoverySpec
from circat.service.jobs.store import JobRow, JobStatus, JobStore
from circat.service.stores.base import EvaluationFilter
from circat.service.stores.neo4j import Neo4jStore
from circat.service.stores.sqlite import SqliteStore
from circat.service.stores.versions import CATALOGUE_SCHEMA
from tests.conftest import neo4j_uri, postgres_url, wipe_neo4j

FIXTURES = Path(__file__).parent / "fixtures"
OLD = ("v0", "v0-early")
"""``v0``: commit 49b2790 (the last unversioned format); ``v0-early``: a25f3b5 (before evaluations existed)"""


def expected(name: str) -> dict[str, dict]:
    """The fixture's circuits as the code that wrote it exported them, by id."""
    docs = [json.loads(line) for line in (FIXTURES / name / "expected.jsonl").read_text().splitlines()]
    return {d["id"]: d for d in docs}


def reads_back(store, name: str, created: dict[str, str] | None = None) -> None:
    """Every circuit of the fixture reads back with the same id, items, scores and provenance (creation times:
    ``created``'s where given)."""
    want = expected(name)
    assert len(want) >= 9
    for cid, doc in want.items():
        doc = doc | ({"created_at": created[cid]} if created else {})
        assert document_from_circuit(store.get(cid)) == CircuitDocument.model_validate(doc), cid


def old_catalogue(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.db"
    shutil.copy(FIXTURES / name / "catalogue.db", path)
    return path


def version_of(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


@pytest.mark.parametrize("name", OLD)
def test_an_unversioned_sqlite_catalogue_migrates_once_and_reads_back_identical(tmp_path, name):
    path = old_catalogue(tmp_path, name)
    assert version_of(path) == 0
    store = SqliteStore(f"sqlite:///{path}")
    assert store.migrate() == 0 and store.schema_version() == CATALOGUE_SCHEMA == version_of(path)
    assert (tmp_path / f"{name}.db.v0.bak").exists(), "a migration of data backs the file up first"
    reads_back(store, name)
    evaluations, total = store.evaluations(EvaluationFilter())
    assert total == (2 if name == "v0" else 0)
    assert all(e.low is not None and e.low <= e.value <= e.high for e in evaluations)
    assert store.stabilities()[1] == (1 if name == "v0" else 0)
    store.close()
    again = SqliteStore(f"sqlite:///{path}")
    assert again.migrate() == CATALOGUE_SCHEMA, "a second open finds the current version and migrates nothing"
    reads_back(again, name)


def test_a_new_sqlite_catalogue_is_created_at_the_current_version(tmp_path):
    store = SqliteStore(f"sqlite:///{tmp_path / 'new.db'}")
    assert store.migrate() is None and version_of(tmp_path / "new.db") == CATALOGUE_SCHEMA
    assert not list(tmp_path.glob("*.bak"))


def test_a_newer_sqlite_catalogue_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "future.db"
    SqliteStore(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {CATALOGUE_SCHEMA + 41}")
    before = path.read_bytes()
    with pytest.raises(SchemaMismatch) as err:
        SqliteStore(f"sqlite:///{path}")
    assert f"version {CATALOGUE_SCHEMA + 41}" in str(err.value) and f"({CATALOGUE_SCHEMA})" in str(err.value)
    assert path.read_bytes() == before


SLOW_MIGRATION = """
import sys, time
from circat.service.stores import sqlite_schema
step = sqlite_schema.MIGRATIONS[0]
def slow(conn):
    step(conn)
    print("MIGRATED", flush=True)
    time.sleep(120)
sqlite_schema.MIGRATIONS = (slow,)
from circat.service.stores.sqlite import SqliteStore
SqliteStore(sys.argv[1])
"""


def test_a_migration_killed_before_its_commit_leaves_the_old_version_and_its_rerun_completes(tmp_path):
    path = old_catalogue(tmp_path, "v0-early")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_MIGRATION, f"sqlite:///{path}"], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "MIGRATED"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "evaluations" not in tables and "stability" not in tables, "the killed migration left nothing"
        assert conn.execute("SELECT count(*) FROM circuits").fetchone()[0] == 9
    store = SqliteStore(f"sqlite:///{path}")
    assert store.migrate() == 0 and version_of(path) == CATALOGUE_SCHEMA
    reads_back(store, "v0-early")


def _typed(value: object) -> object:
    if isinstance(value, dict) and "$bytes" in value:
        return bytes.fromhex(value["$bytes"])
    if isinstance(value, dict) and "$datetime" in value:
        return DateTime.from_iso_format(value["$datetime"])
    return value


def load_neo4j_fixture(uri: str) -> None:
    """Write the v0 Neo4j graph (labelled nodes and relationships, as the old store left them) into an empty
    database."""
    graph = json.loads((FIXTURES / "v0" / "neo4j.json").read_text())
    with GraphDatabase.driver(uri, auth=None) as d, d.session() as s:
        for labels in {tuple(n["labels"]) for n in graph["nodes"]}:
            rows = [{"key": n["id"], "props": {k: _typed(v) for k, v in n["props"].items()}}
                    for n in graph["nodes"] if tuple(n["labels"]) == labels]
            s.run(f"UNWIND $rows AS r CREATE (n:{':'.join(labels)}) SET n = r.props, n.fixture_key = r.key",
                  rows=rows).consume()
        for kind in {r["type"] for r in graph["relationships"]}:
            rows = [r for r in graph["relationships"] if r["type"] == kind]
            s.run(f"UNWIND $rows AS r MATCH (a {{fixture_key: r.src}}), (b {{fixture_key: r.dst}}) "
                  f"CREATE (a)-[x:{kind}]->(b) SET x = r.props", rows=rows).consume()
        s.run("MATCH (n) REMOVE n.fixture_key").consume()


@pytest.mark.neo4j
def test_an_unversioned_neo4j_catalogue_migrates_and_reads_back_identical():
    uri = neo4j_uri()
    wipe_neo4j(uri)
    load_neo4j_fixture(uri)
    store = Neo4jStore(uri)
    assert store.schema_version() == 0
    assert store.migrate() == 0 and store.schema_version() == CATALOGUE_SCHEMA
    graph = json.loads((FIXTURES / "v0" / "neo4j.json").read_text())
    created = {n["props"]["id"]: n["props"]["created_at"]["$datetime"] for n in graph["nodes"]
               if n["labels"] == ["Circuit"]}
    reads_back(store, "v0", created)
    assert store.evaluations(EvaluationFilter())[1] == 2 and store.stabilities()[1] == 1
    store.close()
    again = Neo4jStore(uri)
    assert again.migrate() == CATALOGUE_SCHEMA
    again.close()


@pytest.mark.neo4j
def test_a_newer_neo4j_catalogue_is_refused_before_anything_is_written():
    uri = neo4j_uri()
    wipe_neo4j(uri)
    with GraphDatabase.driver(uri, auth=None) as d, d.session() as s:
        s.run("CREATE (:Meta {name: 'catalogue', schema_version: $v})", v=CATALOGUE_SCHEMA + 1).consume()
    store = Neo4jStore(uri)
    with pytest.raises(SchemaMismatch, match=f"version {CATALOGUE_SCHEMA + 1}"):
        store.models()
    with pytest.raises(SchemaMismatch):
        store.migrate()
    store.close()
    with GraphDatabase.driver(uri, auth=None) as d, d.session() as s:
        assert s.run("MATCH (n) RETURN count(n) AS n").single()["n"] == 1
    wipe_neo4j(uri)


@pytest.mark.parametrize("name", OLD)
def test_an_old_job_database_upgrades_through_alembic_and_keeps_its_jobs(tmp_path, name):
    path = tmp_path / "jobs.db"
    shutil.copy(FIXTURES / name / "jobs.db", path)
    store = JobStore(f"sqlite:///{path}")
    assert store.migrated_from is None
    jobs, total = store.list()
    assert total == 4
    assert sorted(j.status for j in jobs) == sorted(JobStatus(s) for s in ("queued", "cancelled", "failed",
                                                                             "succeeded"))
    assert all(j.evaluation_ids == [] for j in jobs)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head()
    assert JobStore(f"sqlite:///{path}").migrated_from == head()


def schema_of(engine: sa.Engine) -> tuple[dict[str, bool], dict[str, tuple[tuple[str, ...], bool]]]:
    inspector = sa.inspect(engine)
    columns = {c["name"]: c["nullable"] for c in inspector.get_columns("jobs")}
    indexes = {i["name"]: (tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes("jobs")}
    return columns, indexes


def test_the_migrations_make_the_table_the_model_declares(tmp_path):
    migrated = JobStore(f"sqlite:///{tmp_path / 'migrated.db'}")
    declared = sa.create_engine(f"sqlite:///{tmp_path / 'declared.db'}")
    SQLModel.metadata.create_all(declared, tables=[JobRow.__table__])
    assert schema_of(migrated.engine) == schema_of(declared)


def test_a_job_database_of_an_unknown_revision_is_refused(tmp_path):
    path = tmp_path / "jobs.db"
    JobStore(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00d'")
    before = path.read_bytes()
    with pytest.raises(SchemaMismatch, match="f00d"):
        JobStore(f"sqlite:///{path}")
    assert path.read_bytes() == before


@pytest.mark.postgres
def test_postgres_job_tables_made_before_alembic_upgrade_once_under_concurrent_opens():
    url = postgres_url(fresh=True)
    engine = sa.create_engine(url)
    SQLModel.metadata.create_all(engine, tables=[JobRow.__table__])
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE jobs DROP COLUMN evaluation_ids"))
        conn.execute(sa.text("INSERT INTO jobs (id, spec, spec_hash, deduplicated, model, task, method, status, "
                             "attempts, submitted_at, circuit_ids, cancel_requested) VALUES ('jold', :spec, 'h', "
                             "true, 'toy', 'ioi', 'eap', 'queued', 0, now(), '[]', false)"),
                     {"spec": DiscoverySpec.parse({"model": "toy", "task": "ioi", "method": "eap"}).canonical_json()})
    engine.dispose()
    found: list[str | None] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            found.append(JobStore(url).migrated_from)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert found.count(None) == 1 and found.count(head()) == 3, found
    store = JobStore(url)
    assert store.get("jold").evaluation_ids == [] and store.get("jold").status is JobStatus.QUEUED


def test_the_cli_names_both_versions_of_a_newer_catalogue(tmp_path):
    from typer.testing import CliRunner

    from circat.workers.cli import app

    path = tmp_path / "future.db"
    SqliteStore(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 7")
    result = CliRunner().invoke(app, ["list", "--store", f"sqlite:///{path}", "--json"])
    assert result.exit_code == 1
    assert "schema version 7, newer than this circat knows (1)" in json.loads(result.stdout)["error"]
