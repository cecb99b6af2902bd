"""Tasks rendered for one tokenizer, so a task means the same thing on every model.

Two steps: the task adapts its own vocabulary (``Task.adapt``: a shorter domain, the decade
digit for greater-than, the one-token names for IOI), then, when answers like ``" 9"`` are not
one token but ``"9"`` after a prompt ending in a space is, the space moves into the prompts.
The held-out split stays that of the unrendered prompt.
"""

from __future__ import annotations

import random
from dataclasses import replace
from functools import lru_cache

from transformers import PreTrainedTokenizerBase

from circat.workers.tasks.base import Example, OneToken, Split, Task
from circat.workers.tasks.encode import added_token, token_ids

PROBE = 16


def one_token(tokenizer: PreTrainedTokenizerBase) -> OneToken:
    """``fits(prompt, answer)``: whether ``answer`` adds exactly one known token to ``prompt``."""
    unk = tokenizer.unk_token_id

    @lru_cache(maxsize=4096)
    def fits(prompt: str, answer: str) -> bool:
        head, full = token_ids(tokenizer, [prompt, prompt + answer])
        return added_token(head, full, unk) is not None
    return fits


class SpaceInPrompt(Task):
    """A task whose answers' leading space is moved to the end of its prompts."""

    def __init__(self, inner: Task):
        self.inner, self.name, self.family, self.metric = inner, inner.name, inner.family, inner.metric

    def sample(self, rng: random.Random) -> Example:
        return move_space(self.inner.sample(rng))

    def examples(self, n: int, seed: int = 0, split: Split = Split.TEST) -> list[Example]:
        return [move_space(e) for e in self.inner.examples(n, seed, split)]

    def words(self) -> set[str]:
        return self.inner.words()


def move_space(example: Example) -> Example:
    """``example`` with the leading space of every answer moved onto its prompts (when all have one)."""
    if not all(a.startswith(" ") for a in (*example.answers, *example.wrongs)):
        return example
    return replace(example, clean=example.clean + " ", corrupted=example.corrupted + " ",
                   answers=tuple(a[1:] for a in example.answers), wrongs=tuple(a[1:] for a in example.wrongs))


def for_tokenizer(task: Task, tokenizer: PreTrainedTokenizerBase) -> Task:
    """``task`` as ``tokenizer`` can ask it; unchanged when it already fits."""
    fits = one_token(tokenizer)
    adapted = task.adapt(fits)
    if _all_fit(adapted, fits):
        return adapted
    moved = SpaceInPrompt(adapted)
    return moved if _all_fit(moved, fits) else adapted


def _all_fit(task: Task, fits: OneToken) -> bool:
    probe = task.examples(PROBE, seed=0, split=Split.ALL)
    return all(fits(e.clean, a) for e in probe for a in (*e.answers, *e.wrongs))
