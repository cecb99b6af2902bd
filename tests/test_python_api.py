"""``import circat`` in a notebook: listing, circuits, overlap views, discovery, jobs, models; and the CLI agrees."""

from __future__ import annotations

import json
import subprocess
import sys

import networkx as nx
import pandas as pd
import pytest
from typer.testing import CliRunner

import circat
from circat.workers.cli import app

LITERATURE = ("numerals", "number-words", "months", "greater-than", "ioi")


@pytest.fixture
def cat(tmp_path):
    """The configured (per-test) catalogue with the literature circuits, through the CLI."""
    result = CliRunner().invoke(app, ["demo", "--literature", "--json", "--report-out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    with circat.open() as opened:
        yield opened


def test_import_circat_does_not_import_torch():
    code = "import sys, circat; assert 'torch' not in sys.modules and 'transformer_lens' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_list_returns_the_rows_the_cli_lists_and_converts_to_pandas(cat):
    rows = cat.list(model="gpt2")
    cli = json.loads(CliRunner().invoke(app, ["list", "--model", "gpt2", "--json"]).stdout)
    assert [r.id for r in rows] == [r["id"] for r in cli["items"]] and rows.total == cli["total"] == 5
    frame = rows.to_pandas()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 5
    assert set(frame["task"]) == set(LITERATURE)
    assert "<table>" in rows._repr_html_() and rows[0].id in rows._repr_html_()


def test_a_circuit_has_names_scores_exports_and_draws_itself(cat):
    (row,) = cat.list(task="ioi")
    c = cat.get(row.id)
    assert c.id == row.id and c.provenance.task == "ioi"
    assert "a9.h9" in c.nodes and "a9.h6" in c.nodes  # name movers of Wang et al.
    assert c.edges == []  # the literature circuits are node circuits
    svg = c._repr_svg_()
    assert svg.startswith("<svg") and all(f'data-name="{n}"' in svg for n in c.nodes)
    mib = c.to_mib()
    assert mib["nodes"]["a9.h9"]["in_graph"] is True
    graph = c.to_networkx()
    assert isinstance(graph, nx.DiGraph) and set(graph.nodes) == set(c.nodes)
    assert c.to_document()["task"] == "ioi"


def test_overlap_shared_matrix_and_diff_answer_as_the_cli_does(cat):
    ids = {r.task: r.id for r in cat.list(model="gpt2")}
    seq = [ids[t] for t in ("numerals", "number-words", "months", "greater-than")]
    shared = cat.shared(seq)
    assert set(shared[0].support) == {"a6.h1", "a8.h8", "a9.h1", "m8", "m9", "m10"}
    assert "a6.h1" in shared._repr_html_()
    pairs = cat.overlap(ids["ioi"], ids["months"])
    assert pairs[0].shared == ["a0.h1", "a7.h9", "a10.h7"] and "jaccard" in pairs._repr_html_()
    cli = json.loads(CliRunner().invoke(app, ["overlap", ids["ioi"], ids["months"], "--json"]).stdout)
    assert cli[0]["jaccard"] == pytest.approx(pairs[0].jaccard)
    m = cat.matrix(list(ids.values()))
    assert m.to_pandas().shape == (5, 5) and "<svg" in m._repr_html_() and "ioi / literature" in m._repr_html_()
    diff = cat.diff(ids["ioi"], ids["months"])
    assert "a9.h9" in diff["node"] and "a0.h1" not in diff["node"]
    level, holding = cat.containing("gpt2", "a9.h1")
    assert level == "node" and ids["numerals"] in holding and ids["ioi"] not in holding


def test_report_writes_the_same_page_as_the_cli(cat, tmp_path):
    ids = [r.id for r in cat.list()]
    path = cat.report(ids, tmp_path / "nb.html")
    assert all(i in path.read_text() for i in ids)


def test_discover_in_process_stores_and_returns_circuits(tmp_path):
    found = circat.discover(model="toy", task="ioi", method="eap", levels=(0.8,), n=16, progress=False)
    assert len(found) == 1 and found[0].faithfulness is not None and found[0].edges
    with circat.open() as cat:
        assert [r.id for r in cat.list(model="toy")] == [found[0].id]
        assert cat.get(found[0].id).edges == found[0].edges


def test_submit_wait_and_circuits_run_the_embedded_worker():
    job = circat.submit(model="toy", task="greater-than", method="eap", levels=(0.8,), n=16)
    assert job.status == "queued"
    assert job.wait(progress=False).view["status"] == "succeeded"
    circuits = job.circuits()
    assert len(circuits) == 1 and circuits[0].provenance.task == "greater-than"


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="method"):
        circat.discover(model="toy", task="ioi", method="no-such-method", progress=False)
    with pytest.raises(ValueError, match="unsupported store URL"):
        circat.open("ftp://nowhere")


def test_tasks_and_models():
    assert [r["task"] for r in circat.tasks()] == ["numerals", "number-words", "months", "decreasing-numerals",
                                                   "greater-than", "ioi"]
    loaded = circat.load_model("toy")
    assert loaded.name == "toy" and loaded.bridge is not None and loaded.shape.n_layers >= 1
