"""The tutorial notebook (``docs/tutorial.ipynb``) runs top to bottom in a real kernel, and is kept without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "tutorial.ipynb"


def _text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts += [str(v) for v in out.get("data", {}).values()] + [out.get("text", "")]
    return "".join(parts)


def test_the_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_the_tutorial_runs_top_to_bottom(tmp_path, monkeypatch):
    # one OpenMP thread in the kernel: on a two-core machine, the spinning OpenMP threads of a kernel that shares
    # its cores with the test's servers make every tensor operation several times slower (same results)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: _text(c) for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    everything = "\n".join(outputs.values())
    assert "a6.h1" in everything and "m10" in everything  # the literature's shared sub-circuit
    svgs = [o for c in nb.cells for o in c.get("outputs", []) if "image/svg+xml" in o.get("data", {})]
    assert len(svgs) >= 2  # the IOI circuit and a discovered circuit drew themselves
    assert "transfer matrix of toy" in everything
    assert (tmp_path / "tutorial.html").is_file() and (tmp_path / "tutorial.db").is_file()
