"""Schema versions of the catalogue stores (docs/lifecycle.md lists what each version changed).

A store records the version it was written with (SQLite: ``PRAGMA user_version``; Neo4j: the ``schema_version``
of the ``(:Meta {name: 'catalogue'})`` node). A store without one was written before versions existed: version 0,
which covers every format up to commit 49b2790 (evaluations with or without ``low``/``high``, with or without the
evaluation and stability records). Opening an older store migrates it forward; a newer one is refused.
"""

from __future__ import annotations

from circat.service.errors import SchemaMismatch

CATALOGUE_SCHEMA = 1
"""1: the first recorded version (the format of 49b2790: circuits, evaluations with intervals, stability)."""


def check_not_newer(what: str, found: int) -> None:
    """Refuse a store written by a newer schema than this code knows, before anything is written."""
    if found > CATALOGUE_SCHEMA:
        raise SchemaMismatch(what, found, CATALOGUE_SCHEMA)
