"""Custom tasks: one example per line of a JSONL file (``prompt``, ``answer``, ``corrupted_prompt``,
``wrong_answer``), parsed and checked by ``service.jobs.spec.parse_task_lines`` (errors name the lines)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from circat.service.jobs.spec import TaskFileError, TaskLine, parse_task_lines
from circat.service.types import TaskFamily
from circat.workers.tasks.base import Example, Split, Task


class CustomTask(Task):
    """A task whose examples are the lines of a JSONL file, in file order."""

    family = TaskFamily.CUSTOM

    def __init__(self, name: str, lines: Sequence[TaskLine]):
        self.name = name
        self._examples = [Example(x.prompt, x.corrupted_prompt, (x.answer,), (x.wrong_answer,)) for x in lines]

    @staticmethod
    def from_file(path: str | Path) -> CustomTask:
        """The task of a JSONL file, named after the file."""
        path = Path(path)
        if not path.is_file():
            raise TaskFileError(f"task file not found: {path}")
        return CustomTask(path.stem, parse_task_lines(path.read_text(), path.name))

    def sample(self, rng: random.Random) -> Example:
        return rng.choice(self._examples)

    def examples(self, n: int, seed: int = 0, split: Split = Split.TEST) -> list[Example]:
        """The file's first ``n`` examples (all of them when ``n`` exceeds the file); no split."""
        if n < 1:
            raise ValueError(f"number of examples must be at least 1, got {n}")
        return self._examples[:n]

    def words(self) -> set[str]:
        return {w for ex in self._examples for s in (ex.clean, ex.corrupted, *ex.answers, *ex.wrongs)
                for w in s.split()}
