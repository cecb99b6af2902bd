"""Task metrics on final-position logits: logit and probability differences, KL, accuracy.

All take ``[batch, vocab]`` logits at each prompt's last position (``final_logits``) and
return per-example values (``[batch]``), differentiable where gradients are meaningful.
``task_metric`` gives the batch mean the methods optimise.
"""

from __future__ import annotations

import torch

from circat.workers.tasks.base import Metric
from circat.workers.tasks.encode import TaskBatch


def final_logits(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[batch, pos, vocab]`` logits at each prompt's last real position -> ``[batch, vocab]``."""
    return logits[torch.arange(logits.shape[0], device=logits.device), lengths.to(logits.device) - 1]


def _set_mean(values: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    picked = values.gather(1, idx) * mask
    return picked.sum(1) / mask.sum(1)


def _set_sum(values: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values.gather(1, idx) * mask).sum(1)


def logit_diff(final: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Mean logit of the right answers minus mean logit of the wrong ones."""
    return _set_mean(final, batch.answers, batch.answer_mask) - _set_mean(final, batch.wrongs, batch.wrong_mask)


def prob_diff(final: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Probability mass on the right answers minus the mass on the wrong ones."""
    probs = final.softmax(-1)
    return _set_sum(probs, batch.answers, batch.answer_mask) - _set_sum(probs, batch.wrongs, batch.wrong_mask)


def kl_divergence(final: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """KL(reference || final) of the next-token distributions, per example."""
    ref = reference.log_softmax(-1)
    return (ref.exp() * (ref - final.log_softmax(-1))).sum(-1)


def accuracy(final: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """1.0 where the top-1 token is one of the right answers, else 0.0."""
    top = final.argmax(-1, keepdim=True)
    return ((batch.answers == top) & batch.answer_mask).any(1).float()


def task_metric(metric: Metric, final: torch.Tensor, batch: TaskBatch,
                reference: torch.Tensor | None = None) -> torch.Tensor:
    """The batch mean of ``metric``; KL needs the clean model's ``reference`` logits."""
    return per_example(metric, final, batch, reference).mean()


def per_example(metric: Metric, final: torch.Tensor, batch: TaskBatch,
                reference: torch.Tensor | None = None) -> torch.Tensor:
    """``metric`` of every example ``[batch]`` (their mean is ``task_metric``)."""
    match Metric(metric):
        case Metric.LOGIT_DIFF:
            return logit_diff(final, batch)
        case Metric.PROB_DIFF:
            return prob_diff(final, batch)
        case Metric.KL:
            if reference is None:
                raise ValueError("the KL metric needs the clean model's logits as reference")
            return kl_divergence(final, reference)
