"""Configuration from ``CIRCAT_*`` environment variables, with embedded defaults."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from platformdirs import user_data_dir

from circat.service.limits import Limits
from circat.service.models import cache_root

log = logging.getLogger("circat.config")


def default_store_url() -> str:
    """The embedded SQLite catalogue in the user's data directory."""
    return f"sqlite:///{Path(user_data_dir('circat')) / 'catalogue.db'}"


def default_database_url() -> str:
    """The embedded SQLite job database, beside the embedded catalogue."""
    return f"sqlite:///{Path(user_data_dir('circat')) / 'jobs.db'}"


def checkpoint_dir() -> Path:
    """Where long runs keep checkpoints to resume from: ``CIRCAT_CHECKPOINT_DIR``, else beside the catalogue."""
    return Path(os.environ.get("CIRCAT_CHECKPOINT_DIR") or Path(user_data_dir("circat")) / "checkpoints")


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
    model_roots: tuple[str, ...] = field(default_factory=lambda: (str(cache_root()),))
    hub_models: bool = True
    public_docs: bool = False

    @property
    def write_keys(self) -> tuple[str, ...]:
        """Keys that may write: the API key; with only a read key set, the read key (a private catalogue
        is never writable without a key); none when no key is set (open, loopback only)."""
        return (self.api_key,) if self.api_key else (self.read_key,) if self.read_key else ()

    @property
    def read_keys(self) -> tuple[str, ...]:
        """Keys that may read when reads are private (a read key is set): it and the API key; else none."""
        return tuple(k for k in (self.read_key, self.api_key) if k) if self.read_key else ()

    @staticmethod
    def from_env() -> Settings:
        env = os.environ
        roots = env.get("CIRCAT_MODEL_ROOTS")
        store = env.get("CIRCAT_STORE_URL") or env.get("CIRCAT_NEO4J_URI") or default_store_url()
        return Settings(
            store_url=store,
            neo4j_user=env.get("CIRCAT_NEO4J_USER") or None,
            neo4j_password=env.get("CIRCAT_NEO4J_PASSWORD") or None,
            neo4j_database=env.get("CIRCAT_NEO4J_DATABASE") or "neo4j",
            api_key=bearer_key("CIRCAT_API_KEY", env.get("CIRCAT_API_KEY")),
            read_key=bearer_key("CIRCAT_READ_KEY", env.get("CIRCAT_READ_KEY")),
            limits=Limits.from_env(),
            database_url=env.get("CIRCAT_DATABASE_URL") or default_database_url(),
            broker_url=env.get("CIRCAT_BROKER_URL") or None,
            job_time_limit_s=float(env.get("CIRCAT_JOB_TIME_LIMIT_S") or 6 * 3600),
            api_url=env.get("CIRCAT_API_URL") or None,
            store_retries=int(env.get("CIRCAT_STORE_RETRIES") or 5),
            store_retry_s=float(env.get("CIRCAT_STORE_RETRY_S") or 1.0),
            model_roots=(str(cache_root()),) if roots is None else tuple(r for r in roots.split(os.pathsep) if r),
            hub_models=_flag(env, "CIRCAT_HUB_MODELS", default=env.get("HF_HUB_OFFLINE", "0") in ("", "0")),
            public_docs=_flag(env, "CIRCAT_PUBLIC_DOCS", default=False),
        )


def bearer_key(var: str, raw: str | None) -> str | None:
    """A configured key: surrounding whitespace stripped with a warning (it could never match a bearer
    token); a key with inner whitespace or characters outside printable ASCII refused."""
    if not raw or not raw.strip():
        return None
    key = raw.strip()
    if key != raw:
        log.warning("%s has surrounding whitespace; it was stripped", var)
    if not all("!" <= ch <= "~" for ch in key):
        raise ValueError(f"{var} must be printable ASCII without spaces (it is sent as 'Authorization: Bearer KEY')")
    return key


def _flag(env: os._Environ[str] | dict[str, str], var: str, default: bool) -> bool:
    raw = env.get(var)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{var} must be 1 or 0, got {raw!r}")
