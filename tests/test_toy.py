"""The shipped toy model: it loads like any local directory and meets the 95 % bar on every task."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from transformers import AutoTokenizer
from typer.testing import CliRunner

from circat.service.tasks import TASKS
from circat.workers.cli import app
from circat.workers.models import TOY_DIR, load_model
from circat.workers.task_eval import model_scores, score_tasks
from circat.workers.tasks import registered_tasks
from circat.workers.toy.train import ACCURACY_BAR, ToyConfig, toy_tokenizer, train_toy

runner = CliRunner()


def test_shipped_toy_meets_the_accuracy_bar_on_every_task():
    toy = load_model("toy", device="cpu")
    scores = score_tasks(lambda ids: toy.bridge(ids), toy.tokenizer, registered_tasks(), n=512, seed=1)
    assert [s.task for s in scores] == list(TASKS)
    for s in scores:
        assert s.n == 512
        assert s.accuracy >= ACCURACY_BAR, s
        assert s.logit_diff > 0 and s.prob_diff > 0, s


def test_shipped_tokenizer_is_the_recipe_s_tokenizer():
    shipped = AutoTokenizer.from_pretrained(TOY_DIR)
    assert shipped.get_vocab() == toy_tokenizer(registered_tasks()).get_vocab()
    assert shipped.tokenize("The war lasted from the year 1732 to the year 17")[-4:] == ["to", "the", "year", "17"]
    assert sum(f.stat().st_size for f in TOY_DIR.iterdir()) < 8 * 2**20


def test_training_is_deterministic(tmp_path):
    cfg = ToyConfig(steps=3, pool_per_task=64)
    reports = [train_toy(tmp_path / name, cfg, progress=False) for name in ("a", "b")]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert reports[0].scores == reports[1].scores
    assert json.loads((tmp_path / "a" / "training.json").read_text())["config"]["steps"] == 3


@pytest.mark.parametrize("args", [["tasks", "--json"], ["tasks", "--model", "toy", "--n", "64", "--json"]])
def test_tasks_command(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["task"] for r in rows] == list(TASKS)
    if "--model" in args:
        assert all(r["n"] == 64 and r["accuracy"] >= ACCURACY_BAR for r in rows)


def test_tasks_command_names_a_missing_model_directory(tmp_path):
    result = runner.invoke(app, ["tasks", "--model", str(tmp_path / "nothing"), "--json"])
    assert result.exit_code == 1
    assert "model directory not found" in json.loads(result.stdout)["error"]


def test_model_scores_are_remembered_for_the_same_prompts(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCAT_MODEL_CACHE", str(tmp_path / "models"))
    toy = load_model("toy", device="cpu")
    first = model_scores(toy, registered_tasks()[:2], n=8)
    (cached,) = (tmp_path / "scores").iterdir()
    assert cached.name.startswith("toy-") and [s.competent for s in first] == [True, True]
    calls = []
    monkeypatch.setattr("circat.workers.task_eval.score_tasks", lambda *a, **k: calls.append(a) or first)
    assert model_scores(toy, registered_tasks()[:2], n=8) == first and not calls
    model_scores(toy, registered_tasks()[:2], n=9)
    assert len(calls) == 1  # other prompts: scored again


def test_train_toy_takes_other_shapes_and_refuses_a_width_the_heads_do_not_divide(tmp_path, monkeypatch):
    import circat.workers.toy.train as train

    seen = []

    def record(out, cfg, progress):  # the mapping of options is what is tested here, not training
        seen.append(cfg)
        return train.TrainReport(cfg, [], 0.0, 0.0)

    monkeypatch.setattr(train, "train_toy", record)
    args = ["train-toy", "--out", str(tmp_path), "--layers", "12", "--heads", "12", "--d-model", "96",
            "--steps", "700", "--batch-per-task", "16", "--lr", "0.002", "--json"]
    assert runner.invoke(app, args).exit_code == 0
    assert seen == [ToyConfig(n_layer=12, n_head=12, n_embd=96, n_inner=384, steps=700, batch_per_task=16, lr=0.002)]
    refused = runner.invoke(app, ["train-toy", "--out", str(tmp_path), "--heads", "5", "--json"])
    assert refused.exit_code == 1 and "--d-model 128 is not a multiple of --heads 5" in refused.stdout
    assert len(seen) == 1
