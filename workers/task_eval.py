"""How well a model does each task on held-out prompts: top-1 accuracy and mean logit difference.

``model_scores`` remembers a loaded model's scores in the user cache, keyed by the model's name,
dtype and the exact prompts, so ``circat tasks`` and the demo's competence check agree and the
second asks nothing of the model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from circat.service.models import cache_root
from circat.service.progress import Progress, silent
from circat.service.types import TaskFamily
from circat.workers.metrics import accuracy, final_logits, logit_diff, prob_diff
from circat.workers.models import LoadedModel
from circat.workers.tasks import Split, Task
from circat.workers.tasks.encode import encode
from circat.workers.tasks.render import for_tokenizer

Forward = Callable[[torch.Tensor], torch.Tensor]
COMPETENT_ACCURACY = 0.6
"""below this held-out top-1 accuracy a model is not competent at a task: no circuits are sought"""


@dataclass(frozen=True)
class TaskScore:
    """A model's held-out performance on one task."""

    task: str
    family: TaskFamily
    n: int
    accuracy: float
    logit_diff: float
    prob_diff: float
    competent: bool


@torch.no_grad()
def score_task(forward: Forward, tokenizer: PreTrainedTokenizerBase, task: Task, n: int = 512,
               seed: int = 1, batch_size: int = 128, device: torch.device | str = "cpu") -> TaskScore:
    """Accuracy, logit and probability difference of ``forward`` on ``n`` held-out prompts."""
    batch = encode(for_tokenizer(task, tokenizer).examples(n, seed=seed, split=Split.TEST), tokenizer,
                   equal_length=False)
    acc, ld, pd = [], [], []
    for start in range(0, len(batch), batch_size):
        part = batch[start:start + batch_size].to(device)
        final = final_logits(forward(part.clean[:, :int(part.lengths.max())]), part.lengths).float()
        acc.append(accuracy(final, part))
        ld.append(logit_diff(final, part))
        pd.append(prob_diff(final, part))
    accuracy_ = torch.cat(acc).mean().item()
    return TaskScore(task.name, task.family, len(batch), accuracy_, torch.cat(ld).mean().item(),
                     torch.cat(pd).mean().item(), accuracy_ >= COMPETENT_ACCURACY)


def score_tasks(forward: Forward, tokenizer: PreTrainedTokenizerBase, tasks: Sequence[Task], n: int = 512,
                seed: int = 1, device: torch.device | str = "cpu", progress: Progress = silent) -> list[TaskScore]:
    """``score_task`` for each task, reporting each one done."""
    out = []
    for i, task in enumerate(tasks):
        progress(i, len(tasks), task.name)
        out.append(score_task(forward, tokenizer, task, n=n, seed=seed, device=device))
    progress(len(tasks), len(tasks), "done")
    return out


def model_scores(model: LoadedModel, tasks: Sequence[Task], n: int = 512, seed: int = 1,
                 progress: Progress = silent) -> list[TaskScore]:
    """``score_tasks`` of a loaded model, read from the cache when these exact prompts were scored before."""
    path = _scores_path(model, tasks, n, seed)
    if path.is_file():
        return [TaskScore(**row) for row in json.loads(path.read_text())]
    scores = score_tasks(lambda ids: model.bridge(ids), model.tokenizer, tasks, n=n, seed=seed, device=model.device,
                         progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps([asdict(s) for s in scores], indent=2) + "\n")
    partial.replace(path)
    return scores


def _scores_path(model: LoadedModel, tasks: Sequence[Task], n: int, seed: int) -> Path:
    digest = hashlib.sha256(json.dumps([model.name, str(model.dtype), n, seed]).encode())
    for task in tasks:
        for e in for_tokenizer(task, model.tokenizer).examples(n, seed=seed, split=Split.TEST):
            digest.update(json.dumps([task.name, e.clean, e.answers, e.wrongs]).encode())
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in model.name)
    return cache_root().parent / "scores" / f"{safe}-{digest.hexdigest()[:16]}.json"
