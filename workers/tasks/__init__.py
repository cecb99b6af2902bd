"""The task suite: registered tasks by name, and custom tasks from JSONL files."""

from __future__ import annotations

from pathlib import Path

from circat.service.tasks import TASKS
from circat.workers.tasks.base import Example, Metric, Split, Task
from circat.workers.tasks.custom import CustomTask, TaskFileError
from circat.workers.tasks.greater_than import GreaterThanTask
from circat.workers.tasks.ioi import IOITask
from circat.workers.tasks.sequences import Corruption, SequenceTask, sequence_tasks

__all__ = ["Corruption", "CustomTask", "Example", "GreaterThanTask", "IOITask", "Metric", "SequenceTask",
           "Split", "Task", "TaskFileError", "get_task", "registered_tasks"]


def registered_tasks(corruption: Corruption = Corruption.RANDOM_MEMBERS) -> list[Task]:
    """Every registered task, in the order of ``service.tasks.TASKS``."""
    tasks: list[Task] = [*sequence_tasks(corruption=corruption), GreaterThanTask(), IOITask()]
    by_name = {t.name: t for t in tasks}
    return [by_name[name] for name in TASKS]


def get_task(spec: str, corruption: Corruption = Corruption.RANDOM_MEMBERS) -> Task:
    """A registered task by name, or a custom task from a ``.jsonl`` path."""
    if spec.endswith(".jsonl") or Path(spec).is_file():
        return CustomTask.from_file(spec)
    for task in registered_tasks(corruption):
        if task.name == spec:
            return task
    raise KeyError(f"unknown task {spec!r}; registered: {', '.join(TASKS)}; or give a .jsonl file")
