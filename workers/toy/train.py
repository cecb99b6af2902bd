"""Train the toy model on every registered task; deterministic for a given seed and machine.

The loss is the negative log of the probability mass on the right answers at each prompt's
last position (cross-entropy when there is one right answer; for greater-than, the mass on
every later year). Training prompts come from each task's train split only, so the held-out
prompts the acceptance bar is measured on are never seen.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from circat.workers.task_eval import TaskScore, score_tasks
from circat.workers.tasks import Split, Task, registered_tasks
from circat.workers.tasks.encode import TaskBatch, encode
from circat.workers.toy.tokenizer import build_tokenizer

ACCURACY_BAR = 0.95


@dataclass(frozen=True)
class ToyConfig:
    """Architecture and training settings of the toy model."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_inner: int = 512
    n_positions: int = 32
    steps: int = 1500
    batch_per_task: int = 32
    pool_per_task: int = 8192
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0


@dataclass(frozen=True)
class TrainReport:
    """What a training run produced: held-out scores per task, time and final loss."""

    config: ToyConfig
    scores: list[TaskScore]
    seconds: float
    final_loss: float

    @property
    def meets_bar(self) -> bool:
        return all(s.accuracy >= ACCURACY_BAR for s in self.scores)


def toy_tokenizer(tasks: list[Task]) -> PreTrainedTokenizerFast:
    """The word-level tokenizer over every word the tasks use."""
    return build_tokenizer(w for t in tasks for w in t.words())


def _pool(tasks: list[Task], tokenizer: PreTrainedTokenizerFast, cfg: ToyConfig) -> list[TaskBatch]:
    return [encode(t.examples(cfg.pool_per_task, seed=cfg.seed, split=Split.TRAIN), tokenizer, equal_length=False)
            for t in tasks]


def _pad_to(x: torch.Tensor, width: int, fill: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=fill)


@dataclass(frozen=True)
class Minibatch:
    """Clean prompts of every task, right-padded to one width, with their right answers."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    answers: torch.Tensor
    answer_mask: torch.Tensor


def _minibatch(pools: list[TaskBatch], cfg: ToyConfig, gen: torch.Generator, pad: int) -> Minibatch:
    parts = [p[torch.randint(len(p), (cfg.batch_per_task,), generator=gen)] for p in pools]
    width = max(p.clean.shape[1] for p in parts)
    k = max(p.answers.shape[1] for p in parts)
    return Minibatch(
        tokens=torch.cat([_pad_to(p.clean, width, pad) for p in parts]),
        lengths=torch.cat([p.lengths for p in parts]),
        answers=torch.cat([_pad_to(p.answers, k, 0) for p in parts]),
        answer_mask=torch.cat([_pad_to(p.answer_mask, k, False) for p in parts]),
    )


def answer_mass_loss(final: torch.Tensor, batch: Minibatch) -> torch.Tensor:
    """Mean of -log P(any right answer) over the batch."""
    logp = final.log_softmax(-1).gather(1, batch.answers).masked_fill(~batch.answer_mask, float("-inf"))
    return -logp.logsumexp(1).mean()


def train_toy(out_dir: Path, cfg: ToyConfig = ToyConfig(), progress: bool = True) -> TrainReport:
    """Train, evaluate on held-out prompts and save the model and tokenizer to ``out_dir``."""
    torch.manual_seed(cfg.seed)
    hf_logging.set_verbosity_error()  # right padding is intended: causal attention never sees it
    tasks = registered_tasks()
    tokenizer = toy_tokenizer(tasks)
    pools = _pool(tasks, tokenizer, cfg)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=cfg.n_inner, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(cfg.seed)
    started = time.perf_counter()
    loss = torch.tensor(float("nan"))
    model.train()
    for step in (bar := tqdm(range(cfg.steps), desc="training toy", disable=not progress)):
        batch = _minibatch(pools, cfg, gen, tokenizer.pad_token_id)
        logits = model(batch.tokens).logits
        final = logits[torch.arange(len(batch.lengths)), batch.lengths - 1]
        loss = answer_mass_loss(final, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - started
    model.eval()
    scores = score_tasks(lambda ids: model(ids).logits, tokenizer, tasks)
    report = TrainReport(cfg, scores, seconds, loss.item())
    _save(model, tokenizer, report, out_dir)
    return report


def _save(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, report: TrainReport, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    record = {**asdict(report), "torch": torch.__version__, "machine": platform.machine(),
              "threads": torch.get_num_threads()}
    (out_dir / "training.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
