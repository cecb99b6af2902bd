"""Tasks rendered for a tokenizer: unchanged where they fit, adapted where digits or spaces do not."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from circat.workers.tasks import GreaterThanTask, SequenceTask, Split, registered_tasks
from circat.workers.tasks.encode import encode
from circat.workers.tasks.render import SpaceInPrompt, for_tokenizer, one_token
from tests.tiny_models import TOKENIZER

TASKS = {t.name: t for t in registered_tasks()}


@pytest.fixture(scope="module")
def digit_level():
    """Like SmolLM2's: every digit its own token, and a space before a digit its own token too."""
    words = sorted({w for t in registered_tasks() for w in t.words() if not w.isdigit()} | {" ", ",", "."})
    vocab = {"<unk>": 0, **{w: i + 1 for i, w in enumerate([*words, *"0123456789"])}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" ", behavior="isolated"), pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<unk>", pad_token="<unk>")


def test_tasks_that_fit_a_tokenizer_are_left_unchanged():
    for task in registered_tasks():
        assert for_tokenizer(task, TOKENIZER) is task


def test_one_token_check(digit_level):
    fits = one_token(digit_level)
    assert fits("Bat done in ", "9") and not fits("Bat done in", " 9") and not fits("Bat done in ", "10")


@pytest.mark.parametrize("name, domain", [("numerals", tuple("123456789")),
                                          ("decreasing-numerals", tuple("987654321"))])
def test_numerals_keep_their_one_token_run_and_move_the_space(digit_level, name, domain):
    rendered = for_tokenizer(TASKS[name], digit_level)
    assert isinstance(rendered, SpaceInPrompt) and isinstance(rendered.inner, SequenceTask)
    assert rendered.inner.domain == domain
    ex = rendered.examples(64, seed=0, split=Split.ALL)
    assert all(e.clean.endswith(" in ") and e.answers[0] in domain for e in ex)
    encode(ex, digit_level)


def test_greater_than_asks_for_the_decade_digit_unambiguously(digit_level):
    rendered = for_tokenizer(TASKS["greater-than"], digit_level)
    assert isinstance(rendered, GreaterThanTask) and rendered.digit_level
    for e in rendered.examples(64, seed=0, split=Split.ALL):
        start = int(e.clean.split("year ")[1][:4])
        assert start % 10 == 9
        decade = start // 10 % 10
        for digit in e.answers:
            assert all(int(f"{start // 100}{digit}{u}") > start for u in range(10))
        for digit in e.wrongs:
            assert all(int(f"{start // 100}{digit}{u}") <= start for u in range(10))
        assert sorted(e.answers + e.wrongs) == list("0123456789") and str(decade) in e.wrongs
    encode(rendered.examples(64, seed=1), digit_level)


@pytest.mark.parametrize("name", ["months", "number-words", "ioi"])
def test_word_answers_move_their_space_and_keep_the_held_out_split(digit_level, name):
    task = TASKS[name]
    rendered = for_tokenizer(task, digit_level)
    assert isinstance(rendered, SpaceInPrompt)
    for split in (Split.TRAIN, Split.TEST):
        ours, theirs = rendered.examples(16, seed=3, split=split), task.examples(16, seed=3, split=split)
        assert [e.clean for e in ours] == [e.clean + " " for e in theirs]
        assert [e.answers for e in ours] == [tuple(a.lstrip() for a in e.answers) for e in theirs]
    batch = encode(rendered.examples(32, seed=0), digit_level)
    assert (batch.lengths == batch.corrupted_lengths).all()
