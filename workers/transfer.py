"""The transfer matrix: circuits (or expressions) as rows, tasks as columns, each cell a functional evaluation.

Each column is one ``run_evaluation`` of every row on that task, so one batched pass of masks per task and
level (the model loads once per process). Every cell is stored as an evaluation record; a row that is a stored
circuit knows its own task, which marks the diagonal (the circuit on the task it was found for).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from circat.service.catalogue import Catalogue
from circat.service.circuit import CIRCUIT_ID
from circat.service.jobs.evaluation import EvaluationSpec
from circat.service.progress import Progress, silent
from circat.workers.evaluation import EvaluationRun, run_evaluation, store_evaluation


@dataclass(frozen=True)
class TransferRow:
    """One row: its expression, the task its circuit was found for (``None`` for other expressions), its cells."""

    expression: str
    own_task: str | None
    values: dict[str, float]


@dataclass(frozen=True)
class TransferMatrix:
    """Rows x tasks of one model, in one mode, with the runs (and stored evaluation ids) behind them."""

    model: str
    mode: str
    tasks: tuple[str, ...]
    rows: list[TransferRow]
    evaluation_ids: list[str]


def transfer_matrix(spec: EvaluationSpec, cat: Catalogue, device: str | None = None,
                    progress: Progress = silent) -> TransferMatrix:
    """Evaluate every expression of a ``transfer`` spec on each of its tasks; every cell stored as an evaluation."""
    rows, tasks = spec.expressions, spec.columns
    runs: list[EvaluationRun] = []
    ids: list[str] = []
    for i, task in enumerate(tasks):
        progress(i, len(tasks), f"on {task}")
        column = EvaluationSpec(**spec.model_dump() | {"kind": "evaluate", "task": task, "tasks": None})
        run = run_evaluation(column, cat, device)
        records, _ = store_evaluation(cat, run, save=False)
        ids += [r.id for r in records]
        runs.append(run)
    progress(len(tasks), len(tasks), "done")
    own = {r: cat.get(r).provenance.task for r in rows if _is_id(r)}
    out = [TransferRow(runs[0].results[j].selection.text, own.get(row),
                       {run.spec.task: run.results[j].value for run in runs}) for j, row in enumerate(rows)]
    return TransferMatrix(runs[0].model, spec.mode.value, tuple(tasks), out, ids)


def _is_id(text: str) -> bool:
    return re.fullmatch(CIRCUIT_ID, text.strip()) is not None
