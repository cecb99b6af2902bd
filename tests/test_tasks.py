"""The task suite: valid batches on the toy tokenizer, seeds, splits, corruptions, custom JSONL."""

from __future__ import annotations

import json

import pytest

from circat.service.tasks import TASKS
from circat.service.types import TaskFamily
from circat.workers.tasks import Corruption, CustomTask, Split, TaskFileError, get_task, registered_tasks
from circat.workers.tasks.base import Example, held_out
from circat.workers.tasks.encode import TokenizationError, encode
from circat.workers.tasks.greater_than import GreaterThanTask
from circat.workers.tasks.ioi import NAMES, IOITask
from circat.workers.tasks.sequences import MONTHS, NUMERALS, SequenceTask
from tests.tiny_models import TOKENIZER


def test_registry_matches_the_service_table():
    assert [t.name for t in registered_tasks()] == list(TASKS)
    assert {t.name: t.family for t in registered_tasks()} == {n: i.family for n, i in TASKS.items()}
    assert get_task("ioi").family is TaskFamily.NAME_COPYING
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        get_task("nope")


@pytest.mark.parametrize("task", registered_tasks(), ids=lambda t: t.name)
def test_every_task_encodes_with_single_token_answers(task):
    batch = encode(task.examples(200, seed=3), TOKENIZER)
    assert batch.clean.shape == batch.corrupted.shape
    assert (batch.lengths == batch.corrupted_lengths).all()
    assert batch.answer_mask.any(1).all() and batch.wrong_mask.any(1).all()
    assert (batch.clean[:, 0] == TOKENIZER.bos_token_id).all()
    assert not (batch.clean == TOKENIZER.unk_token_id).any()
    for i, ex in enumerate(task.examples(200, seed=3)[:20]):
        ids = TOKENIZER(ex.clean + ex.answers[0], add_special_tokens=False)["input_ids"]
        assert ids[-1] == batch.answers[i, 0]


@pytest.mark.parametrize("task", registered_tasks(), ids=lambda t: t.name)
def test_examples_are_reproducible_and_splits_are_disjoint(task):
    assert task.examples(50, seed=7) == task.examples(50, seed=7)
    assert task.examples(50, seed=7) != task.examples(50, seed=8)
    test = {e.clean for e in task.examples(300, seed=0, split=Split.TEST)}
    train = {e.clean for e in task.examples(300, seed=0, split=Split.TRAIN)}
    assert not test & train
    assert all(held_out(p) for p in test) and not any(held_out(p) for p in train)


def test_sequence_prompts_follow_the_templates():
    ex = SequenceTask("numerals", NUMERALS).examples(1, seed=0)[0]
    words = ex.clean.split()
    assert words[1] in ("done", "lost", "born") and words[2] == "in" and ex.clean.endswith(f"{words[1]} in")
    nums = [int(w.rstrip(".")) for w in words if w.rstrip(".").isdigit()]
    assert len(nums) == 4 and nums == list(range(nums[0], nums[0] + 4))
    assert ex.answers == (f" {nums[-1] + 1}",) and ex.wrongs == (f" {nums[-1]}",)


def _members(task: SequenceTask, prompt: str) -> list[str]:
    return [w.rstrip(".") for w in prompt.split() if w.rstrip(".") in task.domain]


@pytest.mark.parametrize("corruption", list(Corruption))
def test_corruptions_do_what_they_say(corruption):
    task = SequenceTask("months", MONTHS, corruption=corruption)
    for ex in task.examples(100, seed=1):
        clean, bad = _members(task, ex.clean), _members(task, ex.corrupted)
        assert len(bad) == len(clean) == 4
        assert ex.clean.split()[0] == ex.corrupted.split()[0]  # only the members change
        match corruption:
            case Corruption.REPEAT_LAST:
                assert bad == [clean[-1]] * 4
            case Corruption.REPEAT_ALL:
                assert len(set(bad)) == 1
            case Corruption.RANDOM_ELEMENT:
                assert sum(a != b for a, b in zip(clean, bad, strict=True)) == 1
            case Corruption.RANDOM_MEMBERS:
                assert not task.is_run(bad)


def test_decreasing_numerals_count_down():
    ex = get_task("decreasing-numerals").examples(1, seed=2)[0]
    nums = [int(w.rstrip(".")) for w in ex.clean.split() if w.rstrip(".").isdigit()]
    assert nums == list(range(nums[0], nums[0] - 4, -1)) and ex.answers == (f" {nums[-1] - 1}",)


def test_greater_than_answer_sets_and_01_corruption():
    for ex in GreaterThanTask().examples(50, seed=0):
        start = ex.clean.split()[-5]
        yy = int(start[2:])
        assert ex.clean.endswith(f"to the year {start[:2]}")
        assert {int(a) for a in ex.answers} == set(range(yy + 1, 100))
        assert {int(w) for w in ex.wrongs} == set(range(yy + 1))
        assert ex.corrupted.split()[-5] == start[:2] + "01"


def test_ioi_orders_and_abc_corruption():
    for order, first_is_io in (("ABBA", True), ("BABA", False)):
        for ex in IOITask(orders=(order,)).examples(50, seed=0):
            names = [w.strip(",.") for w in ex.clean.split() if w.strip(",.") in NAMES]
            io, s = ex.answers[0].strip(), ex.wrongs[0].strip()
            assert names == ([io, s, s] if first_is_io else [s, io, s])
            bad = [w.strip(",.") for w in ex.corrupted.split() if w.strip(",.") in NAMES]
            assert len(set(bad)) == 3


def test_tokenization_errors_name_the_prompts():
    bad = [Example("Van done in", "Van done in", (" 1 2",), (" 1",)),
           Example("Van done in 1.", "Van done in 1. Hat", (" 2",), (" 1",))]
    with pytest.raises(TokenizationError, match="' 1 2' is not one known token after 'Van done in'"):
        encode(bad[:1], TOKENIZER)
    with pytest.raises(TokenizationError, match="differ in length"):
        encode(bad[1:], TOKENIZER)
    assert encode(bad[1:], TOKENIZER, equal_length=False).corrupted.shape[1] == 7


def test_custom_jsonl_task(tmp_path):
    f = tmp_path / "capitals.jsonl"
    rows = [{"prompt": "Van done in 1. Hat done in", "answer": " 2",
             "corrupted_prompt": "Van done in 7. Hat done in", "wrong_answer": " 1"}] * 3
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = get_task(str(f))
    assert task.name == "capitals" and task.family is TaskFamily.CUSTOM
    batch = encode(task.examples(10), TOKENIZER)
    assert len(batch) == 3 and batch.answers[0, 0] == TOKENIZER.convert_tokens_to_ids("2")


def test_custom_jsonl_errors_name_every_bad_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    good = {"prompt": "a", "answer": " b", "corrupted_prompt": "c", "wrong_answer": " d"}
    f.write_text("\n".join([json.dumps(good), "{not json", json.dumps({**good, "answer": ""}),
                            json.dumps({"prompt": "a"}), json.dumps({**good, "extra": 1})]))
    with pytest.raises(TaskFileError) as err:
        CustomTask.from_file(f)
    msg = str(err.value)
    assert "4 bad line(s)" in msg
    assert "bad.jsonl:2: not JSON" in msg
    assert "bad.jsonl:3: answer: must not be empty" in msg
    assert "bad.jsonl:4: answer: Field required" in msg and "wrong_answer: Field required" in msg
    assert "bad.jsonl:5: extra: Extra inputs are not permitted" in msg
    with pytest.raises(TaskFileError, match="not found"):
        CustomTask.from_file(tmp_path / "missing.jsonl")
