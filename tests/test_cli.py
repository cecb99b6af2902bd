"""``circat`` end to end on the embedded store: demo, import (file and MIB folder), export, queries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from circat.workers.cli import app
from tests.helpers import GPT2, SMALL, mib_file

runner = CliRunner()


def run(*args: str, ok: bool = True):
    result = runner.invoke(app, list(args))
    assert (result.exit_code == 0) == ok, result.output
    return result


def test_demo_literature_prints_the_shared_subcircuit(tmp_path):
    report = tmp_path / "demo.html"
    out = json.loads(run("demo", "--literature", "--json", "--report-out", str(report)).stdout)
    assert out["report"] == str(report) and all(cid in report.read_text() for cid in out["circuits"].values())
    assert set(out["shared"]) == {"a6.h1", "a8.h8", "a9.h1", "m8", "m9", "m10"}
    assert out["ioi"]["months"]["shared"] == ["a0.h1", "a7.h9", "a10.h7"]
    assert len(out["jaccard"]["node"]) == 5
    docs = [json.loads(run("export", out["circuits"][t], "--format", "circat").stdout) for t in out["shared_by"]]
    sizes = [sum(item.get("in_graph", True) and name not in ("input", "logits") for name, item in d["nodes"].items())
             for d in docs]
    assert out["shared_by_chance"]["expected"] == pytest.approx(156 * np.prod(np.array(sizes) / 156))
    assert out["shared_by_chance"]["p"] < 0.01  # six components shared by four small circuits is no accident
    human = run("demo", "--literature", "--report-out", str(report)).stdout
    assert "random circuits of these sizes would share" in human
    assert "written to" in human and report.name in human
    assert "Shared by numerals, number-words, months, greater-than" in human
    assert json.loads(run("list", "--json").stdout)["total"] == 5  # idempotent: still five


def test_import_a_mib_submission_folder_and_export_it_back(tmp_path):
    folder = tmp_path / "ioi_gpt2"
    folder.mkdir()
    files = {f"edges_{k}.json": mib_file(GPT2, seed=k, keep=k / 100) for k in (1, 5)}
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content))
    results = json.loads(run("import", str(folder), "--method", "eap-ig", "--json").stdout)
    assert [r["file"].rsplit("/", 1)[1] for r in results] == sorted(files)
    listing = json.loads(run("list", "--model", "gpt2", "--task", "ioi", "--json").stdout)
    assert listing["total"] == 2 and {i["method"] for i in listing["items"]} == {"eap-ig"}
    out = tmp_path / "back.json"
    run("export", results[0]["id"], "--out", str(out))
    assert json.loads(out.read_text()) == files[results[0]["file"].rsplit("/", 1)[1]]
    pair = json.loads(run("overlap", results[0]["id"], results[1]["id"], "--json").stdout)
    assert [p["level"] for p in pair] == ["node", "edge"]


def test_bulk_import_of_a_folder_reports_each_bad_file_and_stores_the_rest(tmp_path):
    folder = tmp_path / "ioi_gpt2"
    folder.mkdir()
    for k in range(5):
        (folder / f"edges_{k}.json").write_text(json.dumps(mib_file(GPT2, seed=k, keep=0.02)))
    bad = mib_file(GPT2, seed=9)
    bad["edges"]["m11->a0.h0<q>"] = {"score": 1.0, "in_graph": True}
    (folder / "edges_2b.json").write_text(json.dumps(bad))
    (folder / "edges_3b.json").write_text("{not json")
    out = run("import", str(folder), "--bulk", "--per-transaction", "3", "--json", ok=False)
    results = {r["file"].rsplit("/", 1)[1]: r for r in json.loads(out.stdout)}
    assert sorted(f for f, r in results.items() if "error" in r) == ["edges_2b.json", "edges_3b.json"]
    assert "m11->a0.h0<q>" in results["edges_2b.json"]["error"] and "not a JSON" in results["edges_3b.json"]["error"]
    assert json.loads(run("list", "--json").stdout)["total"] == 5
    again = json.loads(run("import", str(folder / "edges_0.json"), "--json").stdout)
    assert again[0]["id"] == results["edges_0.json"]["id"]


def test_import_our_format_and_query(tmp_path):
    out = run("demo", "--literature", "--json", "--report-out", str(tmp_path / "d.html"))
    demo = json.loads(out.stdout)["circuits"]
    f = tmp_path / "mine.json"
    run("export", demo["months"], "--format", "circat", "--out", str(f))
    doc = json.loads(f.read_text()) | {"task": "months-again", "id": None}
    f.write_text(json.dumps(doc))
    new_id = json.loads(run("import", str(f), "--json").stdout)[0]["id"]
    shared = json.loads(run("shared", new_id, demo["months"], demo["greater-than"], "--min-support", "3",
                            "--json").stdout)
    assert set(shared[0]["support"]) == {"a6.h1", "a7.h10", "a8.h8", "a9.h1", "m8", "m9", "m10"}
    diff = json.loads(run("diff", demo["greater-than"], demo["months"], "--json").stdout)
    assert diff["node"] == ["a5.h1", "a5.h5", "a6.h9", "a8.h11", "m11"]
    hits = json.loads(run("contains", "gpt2", "a10.h7", "--json").stdout)
    assert sorted(hits["circuits"]) == sorted([demo["ioi"], demo["months"], new_id])
    assert "node-level Jaccard" in run("matrix", demo["ioi"], demo["months"]).stdout


def test_bad_file_is_refused_with_every_problem_named(tmp_path):
    f = tmp_path / "c.json"
    content = mib_file(SMALL)
    content["edges"]["m2->a0.h0<q>"] = {"score": 1.0, "in_graph": True}
    content["nodes"]["a7.h7"] = {"in_graph": True}
    f.write_text(json.dumps(content))
    out = json.loads(run("import", str(f), "--model", "tiny", "--task", "t", "--json", ok=False).stdout)
    assert len(out["problems"]) == 2 and any("a7.h7" in p for p in out["problems"])
    assert json.loads(run("list", "--json").stdout)["total"] == 0


def test_mib_file_without_model_or_folder_name_needs_flags(tmp_path):
    f = tmp_path / "plain.json"
    f.write_text(json.dumps(mib_file(SMALL)))
    result = run("import", str(f), ok=False)
    assert "--model and --task" in result.output


def test_unknown_id_fails_cleanly():
    result = run("export", "nope", ok=False)
    assert "no circuit with id 'nope'" in result.output


def test_serve_refuses_a_public_address_without_a_key():
    result = run("serve", "--host", "0.0.0.0", ok=False)
    assert "CIRCAT_API_KEY" in result.output
