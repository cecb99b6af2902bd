"""Fixtures: every store under test (SQLite in a temp file, the real Neo4j the test command started)."""

from __future__ import annotations

import os
from collections.abc import Iterator

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a model hub; set before transformers is imported

import pytest
import sqlalchemy
from neo4j import GraphDatabase

from circat.service.stores import CircuitStore
from circat.service.stores.neo4j import Neo4jStore
from circat.service.stores.sqlite import SqliteStore

NEO4J_URI = os.environ.get("CIRCAT_NEO4J_URI")
SKIP_NEO4J = os.environ.get("CIRCAT_SKIP_NEO4J") == "1"
POSTGRES_URL = os.environ.get("CIRCAT_TEST_POSTGRES_URL")
SKIP_POSTGRES = os.environ.get("CIRCAT_SKIP_POSTGRES") == "1"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No test sees the developer's CIRCAT_* settings or writes to the real data directory."""
    for key in list(os.environ):
        if key.startswith("CIRCAT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CIRCAT_STORE_URL", f"sqlite:///{tmp_path / 'default.db'}")
    monkeypatch.setenv("CIRCAT_DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("CIRCAT_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))


def neo4j_uri() -> str:
    """The test Neo4j; fail loudly (never skip silently) unless explicitly opted out."""
    if NEO4J_URI:
        return NEO4J_URI
    if SKIP_NEO4J:
        pytest.skip("CIRCAT_SKIP_NEO4J=1: Neo4j suite skipped on request")
    pytest.fail("no Neo4j: run the tests with scripts/test.sh (starts one), or set CIRCAT_NEO4J_URI")


def postgres_url(fresh: bool = False) -> str:
    """The test PostgreSQL (its job and revision tables dropped when ``fresh``); fail loudly unless explicitly
    opted out."""
    if not POSTGRES_URL:
        if SKIP_POSTGRES:
            pytest.skip("CIRCAT_SKIP_POSTGRES=1: PostgreSQL suite skipped on request")
        pytest.fail("no PostgreSQL: run the tests with scripts/test.sh (starts one), or set CIRCAT_TEST_POSTGRES_URL")
    if fresh:
        engine = sqlalchemy.create_engine(POSTGRES_URL)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("DROP TABLE IF EXISTS jobs"))
            conn.execute(sqlalchemy.text("DROP TABLE IF EXISTS alembic_version"))
        engine.dispose()
    return POSTGRES_URL


def wipe_neo4j(uri: str) -> None:
    with GraphDatabase.driver(uri, auth=None) as d, d.session() as s:
        s.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()


@pytest.fixture
def neo4j_store() -> Iterator[Neo4jStore]:
    uri = neo4j_uri()
    wipe_neo4j(uri)
    store = Neo4jStore(uri)
    yield store
    store.close()


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[SqliteStore]:
    store = SqliteStore(f"sqlite:///{tmp_path / 'catalogue.db'}")
    yield store
    store.close()


@pytest.fixture(params=["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def store(request: pytest.FixtureRequest) -> CircuitStore:
    """Each contract test runs once per store."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def redis(tmp_path):
    """A real redis-server on loopback, stopped by its pid."""
    from tests.servers import redis_server

    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
def env(tmp_path, redis) -> dict[str, str]:
    """What Celery workers and the dispatcher share: broker, job database, catalogue."""
    return {"CIRCAT_BROKER_URL": redis.url, "CIRCAT_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
            "CIRCAT_STORE_URL": f"sqlite:///{tmp_path / 'cat.db'}", "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}  # two worker processes share this machine's two cores


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tiny(request, tmp_path_factory):
    """A random 3-layer, 4-head model of each architecture the known-answer tests run on."""
    from tests.tiny_models import SAVERS, load

    return load(SAVERS[request.param](tmp_path_factory.mktemp("tiny"), n_layer=3, n_head=4, n_embd=32))


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def planted(request, tmp_path_factory):
    """Only head a1.h0 and the direct path write to the residual: every other head and MLP is silent."""
    from tests.tiny_models import SAVERS, load

    silent = tuple((layer, h) for layer in range(3) for h in range(4) if (layer, h) != (1, 0))
    return load(SAVERS[request.param](tmp_path_factory.mktemp("planted"), n_layer=3, n_head=4, n_embd=32, seed=3,
                                      silent_heads=silent, silent_mlps=(0, 1, 2)))
