"""The registered tasks by name, with their family and metric: data only, no torch.

The worker's task suite (``workers.tasks``) implements each name listed here; the API and
CLI read this table to validate job specs and label circuits without importing the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from circat.service.types import Metric, TaskFamily


@dataclass(frozen=True)
class TaskInfo:
    """A registered task: its name, family, default metric and a one-line description."""

    name: str
    family: TaskFamily
    metric: Metric
    description: str


TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    TaskInfo("numerals", TaskFamily.SEQUENCE_CONTINUATION, Metric.LOGIT_DIFF,
             "increasing numerals: 'Van done in 1. Hat done in 2. ... Sun done in' -> next number"),
    TaskInfo("number-words", TaskFamily.SEQUENCE_CONTINUATION, Metric.LOGIT_DIFF,
             "increasing number words: '... done in one. ... done in two. ...' -> next word"),
    TaskInfo("months", TaskFamily.SEQUENCE_CONTINUATION, Metric.LOGIT_DIFF,
             "months in order: '... done in March. ... done in April. ...' -> next month"),
    TaskInfo("decreasing-numerals", TaskFamily.SEQUENCE_CONTINUATION, Metric.LOGIT_DIFF,
             "decreasing numerals: '... done in 9. ... done in 8. ...' -> previous number"),
    TaskInfo("greater-than", TaskFamily.COMPARISON, Metric.PROB_DIFF,
             "'The war lasted from the year 1732 to the year 17' -> a year above 32"),
    TaskInfo("ioi", TaskFamily.NAME_COPYING, Metric.LOGIT_DIFF,
             "indirect object identification: '... John gave a drink to' -> Mary"),
)}


def family_of(task: str) -> TaskFamily:
    """The family of a registered task; custom (JSONL) tasks are ``TaskFamily.CUSTOM``."""
    info = TASKS.get(task)
    return info.family if info else TaskFamily.CUSTOM


def task_rows() -> list[dict[str, str]]:
    """Every registered task as a row: task, family, metric, description (``circat tasks``, ``circat.tasks()``)."""
    return [{"task": t.name, "family": t.family.value, "metric": t.metric.value, "description": t.description}
            for t in TASKS.values()]
