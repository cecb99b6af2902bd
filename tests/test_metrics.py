"""Metrics on hand-made logits, with answers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from circat.workers.metrics import accuracy, final_logits, kl_divergence, logit_diff, prob_diff, task_metric
from circat.workers.tasks import Metric
from circat.workers.tasks.encode import TaskBatch


def batch(answers: list[list[int]], wrongs: list[list[int]]) -> TaskBatch:
    def pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        w = max(map(len, rows))
        return (torch.tensor([r + [0] * (w - len(r)) for r in rows]),
                torch.tensor([[True] * len(r) + [False] * (w - len(r)) for r in rows]))
    a, am = pad(answers)
    w, wm = pad(wrongs)
    n = len(answers)
    ids = torch.zeros((n, 3), dtype=torch.long)
    lengths = torch.full((n,), 3)
    return TaskBatch(ids, ids, lengths, lengths, a, am, w, wm)


LOGITS = torch.tensor([[2.0, 0.0, -1.0, 1.0],
                       [0.0, 3.0, 1.0, 1.0]])


def test_logit_diff_single_and_set_answers():
    b = batch([[0], [2, 3]], [[1], [1]])
    assert logit_diff(LOGITS, b).tolist() == [2.0, -2.0]
    assert task_metric(Metric.LOGIT_DIFF, LOGITS, b).item() == 0.0


def test_prob_diff_sums_probability_mass():
    b = batch([[0, 3], [1]], [[1, 2], [0, 2, 3]])
    p = LOGITS.softmax(-1)
    expected = [p[0, 0] + p[0, 3] - p[0, 1] - p[0, 2], p[1, 1] - p[1, 0] - p[1, 2] - p[1, 3]]
    assert prob_diff(LOGITS, b) == pytest.approx(torch.stack(expected))
    z = math.exp(2) + 1 + math.exp(-1) + math.exp(1)
    assert prob_diff(LOGITS, b)[0].item() == pytest.approx((math.exp(2) + math.exp(1) - 1 - math.exp(-1)) / z)


def test_kl_is_zero_for_equal_logits_and_positive_otherwise():
    assert kl_divergence(LOGITS, LOGITS).abs().max().item() < 1e-6
    shifted = LOGITS + torch.tensor([5.0, 0, 0, 0])  # a constant per row would change nothing; this does
    kl = kl_divergence(shifted, LOGITS)
    assert (kl > 0).all()
    p, q = LOGITS.softmax(-1), shifted.softmax(-1)
    assert kl[0].item() == pytest.approx((p[0] * (p[0] / q[0]).log()).sum().item(), rel=1e-5)
    assert kl_divergence(LOGITS + 7.0, LOGITS).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="reference"):
        task_metric(Metric.KL, LOGITS, batch([[0], [0]], [[1], [1]]))


def test_accuracy_counts_top1_in_the_answer_set():
    assert accuracy(LOGITS, batch([[0], [2, 3]], [[1], [1]])).tolist() == [1.0, 0.0]
    assert accuracy(LOGITS, batch([[3, 0], [1]], [[1], [0]])).tolist() == [1.0, 1.0]


def test_final_logits_picks_each_prompts_last_position():
    logits = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3)
    assert final_logits(logits, torch.tensor([2, 4])).tolist() == [logits[0, 1].tolist(), logits[1, 3].tolist()]


def test_metrics_are_differentiable():
    x = LOGITS.clone().requires_grad_(True)
    task_metric(Metric.PROB_DIFF, x, batch([[0], [1]], [[1], [0]])).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
