"""The job table as the first versions made it (a table that exists already is kept as it is).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

INDEXED = ("spec_hash", "model", "task", "method", "status", "submitted_at")


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("jobs"):
        return
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("spec", sa.String, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("deduplicated", sa.Boolean, nullable=False),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("task", sa.String, nullable=False),
        sa.Column("method", sa.String, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float),
        sa.Column("message", sa.String),
        sa.Column("error_type", sa.String),
        sa.Column("error_message", sa.String),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String),
        sa.Column("device", sa.String),
        sa.Column("submitted_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("circuit_ids", sa.String, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
    )
    for column in INDEXED:
        op.create_index(f"ix_jobs_{column}", "jobs", [column])
    op.create_index("jobs_one_per_spec", "jobs", ["spec_hash"], unique=True,
                    sqlite_where=sa.text("deduplicated = 1"), postgresql_where=sa.text("deduplicated"))
