"""Alembic's entry point for the job database: migrations run on the connection ``service.jobs.schema`` passes
(``config.attributes["connection"]``), or, from the ``alembic`` command line, on ``CIRCAT_DATABASE_URL``."""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from circat.service.jobs.store import JobRow

connection = context.config.attributes.get("connection")
if connection is None:
    engine = sa.create_engine(os.environ["CIRCAT_DATABASE_URL"])
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=JobRow.metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=JobRow.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
