"""MkDocs hooks: the OpenAPI reference page, generated from the API app at build time, and repository files
included into pages (``<!-- include: PATH -->``).

The build writes ``openapi.json`` (the app's OpenAPI document), the page ``openapi.md`` (every operation in a
table, then ReDoc rendering the document) and ReDoc's script from the ``fastapi-offline`` package, so the page
works offline like the API's own ``/redoc``.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

INCLUDE = re.compile(r"<!-- include: ([\w./-]+) -->")
METHODS = ("get", "post", "put", "patch", "delete", "head")


def _openapi() -> dict[str, Any]:
    from circat.service.api.app import create_app

    return create_app().openapi()


def _page(doc: dict[str, Any]) -> str:
    rows = [f"| `{method.upper()}` | `{path}` | {(op.get('summary') or '').replace('|', '/')} |"
            for path, item in doc["paths"].items() for method, op in item.items() if method in METHODS]
    return "\n".join([
        "# OpenAPI reference", "",
        f"The REST API's OpenAPI {doc['openapi']} document, generated from the app when these pages were built: "
        "[openapi.json](openapi.json). A running server serves the same at `/openapi.json`, with Swagger UI at "
        "`/docs` and ReDoc at `/redoc`.", "",
        "| method | path | summary |", "| --- | --- | --- |", *rows, "",
        '<redoc spec-url="../openapi.json"></redoc>',
        '<script src="../assets/redoc.standalone.js"></script>', ""])


def on_files(files_: Files, config: MkDocsConfig) -> Files:
    """Add the generated OpenAPI page, its document and ReDoc's script to the site."""
    doc = _openapi()
    redoc = (files("fastapi_offline") / "static" / "redoc.standalone.js").read_text(encoding="utf-8")
    files_.append(File.generated(config, "openapi.md", content=_page(doc)))
    files_.append(File.generated(config, "openapi.json", content=json.dumps(doc, indent=1)))
    files_.append(File.generated(config, "assets/redoc.standalone.js", content=redoc))
    return files_



def on_page_markdown(markdown: str, page: Any, config: MkDocsConfig, files: Files) -> str:
    """``<!-- include: PATH -->`` becomes the file at PATH of the repository (``schema/README.md`` stays where it
    is); its links to ``../docs/PAGE`` point at the sibling page here."""
    root = Path(config.config_file_path).parent

    def include(match: re.Match[str]) -> str:
        return (root / match[1]).read_text(encoding="utf-8").replace("](../docs/", "](")

    return INCLUDE.sub(include, markdown)
