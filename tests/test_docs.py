"""The documentation: the site builds in strict mode (broken links, anchors and references fail), the API
reference comes from the docstrings, the OpenAPI page from the app; the README stays short."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, cwd=ROOT,
                          env=os.environ | {"NO_MKDOCS_2_WARNING": "1"}, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    python = (site / "python" / "index.html").read_text()
    for name in ("circat.catalogue.Catalogue", "Catalogue.overlap", "circat.run.discover", "CircuitView.to_mib"):
        assert name in python, name  # rendered from the docstrings
    openapi = (site / "openapi" / "index.html").read_text()
    assert "/circuits/{circuit_id}/diagram.svg" in openapi and (site / "openapi.json").is_file()
    schema = (site / "schema" / "index.html").read_text()
    assert "The graph model (Neo4j)" in schema  # schema/README.md, included where it stands
    assert (site / "tutorial.ipynb").is_file()


def test_every_docs_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages <= set(re.findall(r"([\w-]+\.md)", nav))


def test_the_readme_is_short_and_opens_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    block = lines[lines.index("```bash") + 1:lines.index("```")]
    assert [ln.split()[0] for ln in block] == ["scripts/demo.sh", "scripts/test.sh"]
    linked = set(re.findall(r"\]\((docs/[\w./-]+|schema/README\.md)\)", "\n".join(lines)))
    assert linked and all((ROOT / path).exists() for path in linked)
