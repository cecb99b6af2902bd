"""Configuration from ``CIRCAT_*`` environment variables, with embedded defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_data_dir


def default_store_url() -> str:
    """The embedded SQLite catalogue in the user's data directory."""
    return f"sqlite:///{Path(user_data_dir('circat')) / 'catalogue.db'}"


@dataclass(frozen=True)
class Settings:
    """Every setting the service reads; see README's configuration table."""

    store_url: str
    neo4j_user: str | None
    neo4j_password: str | None
    neo4j_database: str
    api_key: str | None

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
        )
