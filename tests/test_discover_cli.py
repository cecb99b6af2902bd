"""``circat discover`` on the toy model: every method on every task stores circuits with faithfulness."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from circat.service.tasks import TASKS
from circat.workers.cli import app

runner = CliRunner()


def run(*args: str, ok: bool = True):
    result = runner.invoke(app, list(args))
    assert (result.exit_code == 0) == ok, result.output
    return result


@pytest.mark.parametrize("method", ["path-patching", "ipe", "ipe-approx"])
@pytest.mark.parametrize("task", list(TASKS))
def test_path_methods_on_every_task(task, method, tmp_path):
    paths = tmp_path / "paths.json"
    extra = ["--search", "best-first", "--max-paths", "10", "--paths-out", str(paths)] if "ipe" in method else []
    extra += ["--ig-steps", "3"] if method == "ipe-approx" else []
    res = json.loads(run("discover", "--model", "toy", "--task", task, "--method", method, "--n", "8",
                         "--min-effect", "0.01", *extra, "--json").stdout)
    (row,) = res["circuits"]
    assert row["faithfulness"] is not None and row["edges"] > 0
    doc = json.loads(run("export", row["id"], "--format", "circat").stdout)
    assert {"cpr", "cmd"} <= set(doc["params"]) and doc["params"]["min_effect"] == 0.01
    if method == "path-patching":
        assert doc["annotations"]["rounds"][0]["receivers"] == ["logits"]
        return
    if method == "ipe-approx":  # every partial path differentiated at 3 points
        assert doc["params"]["ig_steps"] == 3 and doc["params"]["backward_passes"] % 3 == 0
    found = json.loads(paths.read_text())
    listed = found["positive"] + found["negative"]
    assert 0 < len(listed) <= 10 and found == doc["annotations"]["paths"]
    assert all(p["edges"][0].startswith("input->") and p["edges"][-1].endswith("->logits") for p in listed)
    assert all(p["contribution"] > 0 for p in found["positive"])


def test_path_options_belong_to_path_methods():
    res = run("discover", "--model", "toy", "--task", "ioi", "--method", "eap", "--max-paths", "5", ok=False)
    assert "--max-paths applies to path-patching, ipe and ipe-approx, not eap" in res.output
    res = run("discover", "--model", "toy", "--task", "ioi", "--method", "ipe", "--receivers", "z", ok=False)
    assert "paths.receivers" in res.output


@pytest.mark.parametrize("method", ["ablation", "eap", "eap-ig"])
@pytest.mark.parametrize("task", list(TASKS))
def test_every_method_on_every_task(task, method, tmp_path):
    out = tmp_path / "run.json"
    res = json.loads(run("discover", "--model", "toy", "--task", task, "--method", method, "--n", "16",
                         "--threshold", "0.8", "--ig-steps", "2", "--out", str(out), "--json").stdout)
    (row,) = res["circuits"]
    assert row["level"] == 0.8 and row["faithfulness"] is not None
    assert res["summary"]["full_metric"] > res["summary"]["empty_metric"]
    stored = json.loads(run("list", "--model", "toy", "--task", task, "--json").stdout)
    assert stored["total"] == 1 and stored["items"][0]["method"] == method
    assert stored["items"][0]["task_family"] == TASKS[task].family.value
    mib = json.loads(out.read_text())
    assert mib["cfg"]["n_layers"] == 4 and len(mib["nodes"]) == 4 * 5 + 2
    doc = json.loads(run("export", row["id"], "--format", "circat").stdout)
    evaluation = doc["annotations"]["evaluation"]
    assert evaluation["full_metric"] == pytest.approx(res["summary"]["full_metric"])
    if method == "ablation":
        assert row["faithfulness"] >= 0.8 and mib["edges"] == {}
        assert evaluation["faithfulness_by_order"] == {"backward": pytest.approx(row["faithfulness"])}
    else:
        assert len(mib["edges"]) == row["edges"] + sum(not e["in_graph"] for e in mib["edges"].values())
        assert all(e["score"] is not None for e in mib["edges"].values())
        curve = evaluation["curve_absolute"]
        assert curve["percents"] == [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
        assert curve["faithfulness"][-1] == pytest.approx(1.0, abs=1e-4)
        assert curve["cmd"] == pytest.approx(doc["params"]["cmd"])


def test_ablation_levels_and_orders(tmp_path):
    res = json.loads(run("discover", "--model", "toy", "--task", "months", "--method", "ablation", "--n", "16",
                         "--ablation", "mean", "--order", "backward", "--order", "random:3", "--json").stdout)
    rows = res["circuits"]
    assert [r["level"] for r in rows] == [0.7, 0.8, 0.9, 0.97]
    assert all(r["faithfulness"] >= r["level"] for r in rows)
    mib = json.loads(run("export", rows[1]["id"], "--format", "mib").stdout)
    survival = {name: node["score"] for name, node in mib["nodes"].items()}
    assert set(survival.values()) <= {0.0, 0.5, 1.0}  # survival frequency over the two orders
    assert all(survival[name] > 0 for name, node in mib["nodes"].items() if node["in_graph"])


def test_custom_jsonl_task(tmp_path):
    f = tmp_path / "nextnum.jsonl"
    f.write_text("\n".join(json.dumps({"prompt": f"Van done in {i}. Hat done in {i + 1}. Sun done in",
                                       "answer": f" {i + 2}", "corrupted_prompt": f"Van done in {i}. Hat done in 9. "
                                       "Sun done in", "wrong_answer": f" {i + 1}"}) for i in range(1, 6)))
    res = json.loads(run("discover", "--model", "toy", "--task", str(f), "--method", "eap", "--json").stdout)
    assert res["spec"]["task"] == "nextnum"


@pytest.mark.parametrize("args, message", [
    (["--task", "nope", "--method", "eap"], "unknown task 'nope'"),
    (["--task", "ioi", "--method", "eap", "--threshold", "1.5"], "must lie in (0, 1]"),
    (["--task", "ioi", "--method", "ablation", "--order", "sideways"], "unknown sweep order 'sideways'"),
    (["--task", "ioi", "--method", "eap", "--metric", "bleu"], "metric: Input should be 'logit_diff'"),
])
def test_bad_input_is_named_and_nothing_is_stored(args, message):
    res = run("discover", "--model", "toy", *args, "--json", ok=False)
    assert message in json.loads(res.stdout)["error"]
    assert json.loads(run("list", "--json").stdout)["total"] == 0


def test_untokenizable_custom_task_names_the_prompt(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"prompt": "Van done in", "answer": " zebra", "corrupted_prompt": "Hat done in",
                             "wrong_answer": " 1"}) + "\n")
    res = run("discover", "--model", "toy", "--task", str(f), "--method", "eap", "--json", ok=False)
    out = json.loads(res.stdout)
    assert "not a single token" in out["error"]
    assert out["problems"] == ["answer ' zebra' is not one known token after 'Van done in'"]


def test_the_demo_runs_through_jobs_and_reuses_them(tmp_path):
    report = tmp_path / "demo.html"
    first = json.loads(run("demo", "--n", "8", "--json", "--report-out", str(report)).stdout)
    assert first["report"] == str(report)
    assert all(cid in report.read_text() for cid in first["circuits"].values())
    assert set(first["literature"]["shared"]) == {"a6.h1", "a8.h8", "a9.h1", "m8", "m9", "m10"}
    assert len(first["jobs"]) == 10 and all(j["new"] for j in first["jobs"].values())
    assert set(first["by_method"]) == {"ablation", "eap-ig"}
    for method, overlap in first["by_method"].items():
        assert len(overlap["jaccard"]) == 5 and overlap["jaccard"][0][0] == 1.0, method
        assert overlap["jaccard_p"][0][0] < 0.05 and 0 < overlap["sequences_share_by_chance"]["p"] <= 1
        for task in ("greater-than", "ioi"):
            assert set(overlap["with_shared"][task]) <= set(overlap["sequences_share"])
    for task, kept in first["every_method_keeps"].items():
        docs = [json.loads(run("export", first["circuits"][f"{task}/{m}"], "--format", "circat").stdout)
                for m in ("ablation", "eap-ig")]
        nodes = [{name for name, item in d["nodes"].items() if item.get("in_graph", True)} for d in docs]
        assert set(kept) == (nodes[0] & nodes[1]) - {"input", "logits"}, task
    function = first["function"]
    assert function["method"] == "ablation" and set(function["carries"]) == set(first["tasks"])
    for mode in ("keep", "knockout"):
        assert len(function[mode]) == 6 and function[mode][-1]["expression"] == function["shared"]
    for row in function["keep"][:-1]:  # each circuit on its own task gives back its stored faithfulness
        task = row["own_task"]
        assert row["values"][task] == pytest.approx(first["faithfulness"][f"{task}/ablation"], abs=1e-9)
    shared = function["keep"][-1]["values"]
    assert function["carries"] == {t: shared[t] >= 0.5 for t in first["tasks"]}
    html = report.read_text()
    assert html.count('class="transfer"') == 2 and 'class="cell own"' in html
    jobs = json.loads(run("jobs", "--status", "succeeded", "--json").stdout)
    assert jobs["total"] == 10
    second = json.loads(run("demo", "--n", "8", "--json", "--report-out", str(report)).stdout)
    assert not any(j["new"] for j in second["jobs"].values())
    assert second["circuits"] == first["circuits"] and second["jobs"] == {
        k: v | {"new": False} for k, v in first["jobs"].items()}
