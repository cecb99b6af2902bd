"""How well a model does each task on held-out prompts: top-1 accuracy and mean logit difference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from service.types import TaskFamily
from workers.metrics import accuracy, final_logits, logit_diff, prob_diff
from workers.tasks import Split, Task
from workers.tasks.encode import encode
from workers.tasks.render import for_tokenizer

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
                seed: int = 1, device: torch.device | str = "cpu") -> list[TaskScore]:
    """``score_task`` for each task."""
    return [score_task(forward, tokenizer, t, n=n, seed=seed, device=device) for t in tasks]
