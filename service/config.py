"""Configuration from ``CIRCAT_*`` environment variables, with embedded defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from platformdirs import user_data_dir

from service.limits import Limits


def default_store_url() -> str:
    """The embedded SQLite catalogue in the user's data directory."""
    return f"sqlite:///{Path(user_data_dir('circat')) / 'catalogue.db'}"


def default_database_url() -> str:
    """The embedded SQLite job database, beside the embedded catalogue."""
    return f"sqlite:///{Path(user_data_dir('circat')) / 'jobs.db'}"


@dataclass(frozen=True)
class Settings:
    """Every setting the service reads; see README's configuration table."""

    store_url: str
    neo4j_user: str | None
    neo4j_password: str | None
    neo4j_database: str
    api_key: str | None
    read_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    database_url: str = field(default_factory=default_database_url)
    broker_url: str | None = None
    job_time_limit_s: float = 6 * 3600
    api_url: str | None = None
    store_retries: int = 5
    store_retry_s: float = 1.0

    @staticmethod
    def from_env() -> Settings:
        env = os.environ
        store = env.get("CIRCAT_STORE_URL") or env.get("CIRCAT_NEO4J_URI") or default_store_url()
        return Settings(
            store_url=store,
            neo4j_user=env.get("CIRCAT_NEO4J_USER") or None,
            neo4j_password=env.get("CIRCAT_NEO4J_PASSWORD") or None,
            neo4j_database=env.get("CIRCAT_NEO4J_DATABASE") or "neo4j",
            api_key=env.get("CIRCAT_API_KEY") or None,
            read_key=env.get("CIRCAT_READ_KEY") or None,
            limits=Limits.from_env(),
            database_url=env.get("CIRCAT_DATABASE_URL") or default_database_url(),
            broker_url=env.get("CIRCAT_BROKER_URL") or None,
            job_time_limit_s=float(env.get("CIRCAT_JOB_TIME_LIMIT_S") or 6 * 3600),
            api_url=env.get("CIRCAT_API_URL") or None,
            store_retries=int(env.get("CIRCAT_STORE_RETRIES") or 5),
            store_retry_s=float(env.get("CIRCAT_STORE_RETRY_S") or 1.0),
        )
