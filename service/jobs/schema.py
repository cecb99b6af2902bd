"""The job database's schema through Alembic (``service/jobs/migrations``), on SQLite and PostgreSQL.

Opening a job database upgrades it to the newest revision in one transaction that holds the database's write
lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: transactional DDL under an advisory lock), so concurrent
processes migrate it once. A database made before revisions existed (no ``alembic_version``) is taken from the
start: every revision is idempotent on what the old code made. A revision this code does not know (a newer
circat wrote it) is refused before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from circat.service.errors import SchemaMismatch

MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK = 0x63697263  # the advisory lock key PostgreSQL migrations hold ("circ")


def alembic_config() -> Config:
    """Alembic's configuration for the job database's migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def revision(conn: sa.Connection) -> str | None:
    """The revision a job database records; None before its first migration."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine) -> str | None:
    """Upgrade the job database to ``head()``; the revision it had (``SchemaMismatch`` for an unknown one)."""
    cfg, newest = alembic_config(), head()
    known = {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}
    with engine.connect() as conn:
        found = revision(conn)
        _check_known(engine, found, known, newest)
        if found == newest:
            return found
        conn.rollback()
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
        found = revision(conn)  # another process may have migrated it while this one waited
        _check_known(engine, found, known, newest)
        if found != newest:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        conn.commit()
    return found


def _check_known(engine: sa.Engine, found: str | None, known: set[str], newest: str) -> None:
    if found is not None and found not in known:
        raise SchemaMismatch(f"job database {engine.url.render_as_string()}", found, newest)
