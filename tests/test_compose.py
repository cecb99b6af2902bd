"""docker-compose.yml describes the whole service (no Docker engine here: its structure is checked)."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).parent.parent / "docker-compose.yml"


def test_compose_has_every_service_with_health_checks_volumes_and_a_gpu_worker():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) == {"neo4j", "postgres", "redis", "api", "worker"}
    assert all("healthcheck" in services[s] for s in ("neo4j", "postgres", "redis", "api"))
    assert set(spec["volumes"]) >= {"neo4j-data", "postgres-data", "redis-data"}
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] == 1
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["CIRCAT_BROKER_URL"].startswith("redis://redis:")
        assert env["CIRCAT_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["CIRCAT_API_KEY"].startswith("${CIRCAT_API_KEY:?")
    assert "--no-worker" in services["api"]["command"]
