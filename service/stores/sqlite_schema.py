"""The embedded catalogue's tables and their migrations (``PRAGMA user_version`` holds the schema version).

Opening a catalogue written by an older version migrates it in one ``BEGIN IMMEDIATE`` transaction: DDL,
data and the new ``user_version`` commit together, so a migration that is killed leaves the old version intact
and the next open runs it again. Before migrating a file that holds data, SQLite's online backup copies it to
``<file>.v<old>.bak``. A catalogue of a newer version is refused before anything is written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from circat.service.stores.versions import CATALOGUE_SCHEMA, check_not_newer

meta = sa.MetaData()
models_t = sa.Table(
    "models", meta,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("n_layers", sa.Integer, nullable=False),
    sa.Column("n_heads", sa.Integer, nullable=False),
    sa.Column("parallel_attn_mlp", sa.Boolean, nullable=False),
    sa.Column("d_model", sa.Integer),
)
circuits_t = sa.Table(
    "circuits", meta,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("model", sa.String, sa.ForeignKey("models.name"), nullable=False, index=True),
    sa.Column("task", sa.String, nullable=False, index=True),
    sa.Column("task_family", sa.String, index=True),
    sa.Column("method", sa.String, nullable=False, index=True),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("metric", sa.String),
    sa.Column("faithfulness", sa.Float),
    sa.Column("citation", sa.Text),
    sa.Column("created_at", sa.String, nullable=False),
    sa.Column("n_nodes", sa.Integer, nullable=False),
    sa.Column("n_edges", sa.Integer, nullable=False),
    sa.Column("has_edges", sa.Boolean, nullable=False),
    sa.Column("node_scores", sa.LargeBinary),
    sa.Column("edge_scores", sa.LargeBinary),
    sa.Column("node_extra", sa.Text, nullable=False),
    sa.Column("annotations", sa.Text, nullable=False),
)


def _items_table(name: str) -> sa.Table:
    """In-graph items of circuits: (circuit, graph index) with an optional score."""
    return sa.Table(
        name, meta,
        sa.Column("circuit_id", sa.String, sa.ForeignKey("circuits.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("score", sa.Float),
        sa.Index(f"{name}_idx", "idx"),
    )


nodes_t = _items_table("circuit_nodes")
edges_t = _items_table("circuit_edges")
evaluations_t = sa.Table(
    "evaluations", meta,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("model", sa.String, nullable=False, index=True),
    sa.Column("task", sa.String, nullable=False, index=True),
    sa.Column("expression", sa.Text, nullable=False),
    sa.Column("mode", sa.String, nullable=False),
    sa.Column("level", sa.String, nullable=False),
    sa.Column("metric", sa.String, nullable=False),
    sa.Column("ablation", sa.String, nullable=False),
    sa.Column("per_position", sa.Boolean, nullable=False),
    sa.Column("n_prompts", sa.Integer, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("metric_value", sa.Float, nullable=False),
    sa.Column("full_metric", sa.Float, nullable=False),
    sa.Column("empty_metric", sa.Float, nullable=False),
    sa.Column("low", sa.Float, nullable=True),
    sa.Column("high", sa.Float, nullable=True),
    sa.Column("created_at", sa.String, nullable=False, index=True),
)
evaluation_circuits_t = sa.Table(
    "evaluation_circuits", meta,
    sa.Column("evaluation_id", sa.String, sa.ForeignKey("evaluations.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("circuit_id", sa.String, sa.ForeignKey("circuits.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Index("evaluation_circuits_circuit", "circuit_id"),
)

stability_t = sa.Table(
    "stability", meta,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("model", sa.String, nullable=False, index=True),
    sa.Column("task", sa.String, nullable=False),
    sa.Column("method", sa.String, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("seeds", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("created_at", sa.String, nullable=False, index=True),
)
stability_circuits_t = sa.Table(
    "stability_circuits", meta,
    sa.Column("stability_id", sa.String, sa.ForeignKey("stability.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("circuit_id", sa.String, sa.ForeignKey("circuits.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("resample", sa.Integer, nullable=False),
    sa.Index("stability_circuits_circuit", "circuit_id"),
)


def _add_missing_tables_and_columns(conn: sa.Connection) -> None:
    """0 -> 1: tables added after the first catalogues (evaluations, stability), and the nullable columns added
    to existing ones (``evaluations.low``/``high``), empty."""
    meta.create_all(conn)
    for table in meta.sorted_tables:
        present = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} "
                                     f"{column.type.compile(conn.dialect)}")


MIGRATIONS: tuple[Callable[[sa.Connection], None], ...] = (_add_missing_tables_and_columns,)
"""``MIGRATIONS[v]`` takes a catalogue from version ``v`` to ``v + 1``, inside the caller's transaction."""


def user_version(conn: sa.Connection) -> int:
    """The schema version a SQLite catalogue records."""
    return int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())


def migrate_catalogue(engine: sa.Engine, url: str) -> int | None:
    """Bring the catalogue at ``url`` to ``CATALOGUE_SCHEMA``: create a new one, migrate an older one; the
    version it had, None for a new one (``SchemaMismatch`` for a newer one, nothing written)."""
    with engine.connect() as conn:
        found = user_version(conn)
        check_not_newer(f"SQLite catalogue {url}", found)
        if found == CATALOGUE_SCHEMA:
            return found
        holds_data = sa.inspect(conn).has_table("circuits")
    if holds_data:
        _backup(url, found)
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        found = user_version(conn)  # another process may have migrated it while this one waited for the lock
        if found < CATALOGUE_SCHEMA:
            if not sa.inspect(conn).has_table("circuits"):
                meta.create_all(conn)
                holds_data = False
            else:
                for step in MIGRATIONS[found:]:
                    step(conn)
            conn.exec_driver_sql(f"PRAGMA user_version = {CATALOGUE_SCHEMA}")
        conn.commit()
    return found if holds_data else None


def _backup(url: str, version: int) -> None:
    """Copy the catalogue file to ``<file>.v<version>.bak`` with SQLite's online backup (consistent under WAL)."""
    path = url.removeprefix("sqlite:///")
    if not url.startswith("sqlite:///") or path in ("", ":memory:"):
        return
    source, target = sqlite3.connect(path), sqlite3.connect(f"{Path(path)}.v{version}.bak")
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
