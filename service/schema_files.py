"""Locate the language-neutral files in ``schema/`` (repo checkout or installed wheel)."""

from __future__ import annotations

from pathlib import Path


def schema_dir() -> Path:
    """The ``schema/`` folder: beside the package in a checkout, inside it when installed."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "schema", here / "_schema"):
        if (candidate / "neo4j").is_dir():
            return candidate
    raise FileNotFoundError("schema files not found beside or inside the service package")


def cypher_statements(name: str) -> list[str]:
    """The statements of ``schema/neo4j/NAME``, comments dropped."""
    text = (schema_dir() / "neo4j" / name).read_text()
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("//")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
