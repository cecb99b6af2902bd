"""What a task is: examples of (clean, corrupted, answers, wrong answers) and the split rule.

Tasks speak in strings; ``workers.tasks.encode`` turns examples into token tensors for a
given tokenizer and checks them. An example's answers are continuations appended to the
prompt verbatim (``" 3"`` for GPT-2 style tokenizers), so one task serves every tokenizer.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from circat.service.types import Metric, TaskFamily

HELD_OUT_PERCENT = 20

OneToken = Callable[[str, str], bool]
"""Whether an answer is exactly one token appended to a prompt, for some tokenizer."""


class Split(StrEnum):
    """Which prompts a caller wants: training prompts or the held-out ones."""

    TRAIN = "train"
    TEST = "test"
    ALL = "all"


@dataclass(frozen=True)
class Example:
    """One prompt pair: the right continuations and the wrong ones (one or a set each)."""

    clean: str
    corrupted: str
    answers: tuple[str, ...]
    wrongs: tuple[str, ...]


def held_out(prompt: str) -> bool:
    """Whether a clean prompt belongs to the held-out split (a stable hash of its text)."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELD_OUT_PERCENT


class Task(ABC):
    """A task: a name, a family, a default metric and a seeded example generator."""

    name: str
    family: TaskFamily
    metric: Metric = Metric.LOGIT_DIFF

    @abstractmethod
    def sample(self, rng: random.Random) -> Example:
        """Draw one example."""

    @abstractmethod
    def words(self) -> set[str]:
        """Every string the task's prompts and answers are made of (to build a vocabulary)."""

    def adapt(self, fits: OneToken) -> Task:
        """The task as a tokenizer with this ``fits`` can ask it (by default, unchanged)."""
        return self

    def examples(self, n: int, seed: int = 0, split: Split = Split.TEST) -> list[Example]:
        """``n`` examples reproducible from ``seed``, drawn from the requested split."""
        if n < 1:
            raise ValueError(f"number of examples must be at least 1, got {n}")
        rng = random.Random(f"{self.name}:{seed}")
        out: list[Example] = []
        for _ in range(1000 * n):
            ex = self.sample(rng)
            if split is Split.ALL or held_out(ex.clean) == (split is Split.TEST):
                out.append(ex)
                if len(out) == n:
                    return out
        raise RuntimeError(f"task {self.name!r} could not draw {n} {split.value} examples")
