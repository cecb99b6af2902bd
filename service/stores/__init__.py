"""Catalogue stores: embedded SQLite (default) and Neo4j, behind one interface."""

from __future__ import annotations

from circat.service.stores.base import CircuitFilter, CircuitStore, CircuitSummary, Membership, Stored

__all__ = ["CircuitFilter", "CircuitStore", "CircuitSummary", "Membership", "Stored", "open_store"]


def open_store(url: str | None = None) -> CircuitStore:
    """Open the store a URL names: ``sqlite:///path`` or ``bolt://`` / ``neo4j://`` ...

    With no URL, the configured one (``CIRCAT_STORE_URL``) or the embedded default.
    """
    from circat.service.config import Settings

    settings = Settings.from_env()
    url = url or settings.store_url
    if url.startswith(("bolt://", "bolt+s://", "neo4j://", "neo4j+s://")):
        from circat.service.stores.neo4j import Neo4jStore

        return Neo4jStore(url, settings.neo4j_user, settings.neo4j_password, settings.neo4j_database)
    if url.startswith("sqlite:"):
        from circat.service.stores.sqlite import SqliteStore

        return SqliteStore(url)
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH or bolt://HOST:PORT")
