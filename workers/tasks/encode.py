"""Examples to token tensors for one tokenizer, with the checks the methods rely on.

Every answer and wrong answer must be exactly one token appended to its prompt; clean and
corrupted prompts must have equal length where the method patches position by position.
Prompts are right-padded; ``lengths`` locate each prompt's last position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from transformers import PreTrainedTokenizerBase

from circat.workers.tasks.base import Example

SHOWN = 5


class TokenizationError(ValueError):
    """Examples that do not fit the tokenizer; the message names the offending prompts."""


@dataclass(frozen=True)
class TaskBatch:
    """A batch of encoded examples. Answer sets are padded index tensors with masks."""

    clean: torch.Tensor
    corrupted: torch.Tensor
    lengths: torch.Tensor
    corrupted_lengths: torch.Tensor
    answers: torch.Tensor
    answer_mask: torch.Tensor
    wrongs: torch.Tensor
    wrong_mask: torch.Tensor

    def __len__(self) -> int:
        return self.clean.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __getitem__(self, idx: slice) -> TaskBatch:
        return TaskBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


def _complain(what: str, bad: list[str]) -> None:
    if bad:
        shown = "\n  ".join(bad[:SHOWN])
        more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise TokenizationError(f"{len(bad)} example(s) {what}:\n  {shown}{more}")


def token_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids without special tokens; straight through the Rust tokenizer when there is one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def added_token(head: list[int], full: list[int], unk: int | None) -> int | None:
    """The one known token ``full`` adds after ``head``, or ``None`` when it adds anything else."""
    if len(full) != len(head) + 1 or full[:-1] != head or full[-1] == unk:
        return None
    return full[-1]


def answer_tokens(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                  answer_sets: Sequence[Sequence[str]], what: str) -> list[list[int]]:
    """The single token each answer adds to its prompt; refuse answers that are not one token."""
    flat = [(i, p, a) for i, (p, answers) in enumerate(zip(prompts, answer_sets, strict=True)) for a in answers]
    base = token_ids(tokenizer, list(prompts))
    full = token_ids(tokenizer, [p + a for _, p, a in flat])
    out: list[list[int]] = [[] for _ in prompts]
    bad: list[str] = []
    unk = tokenizer.unk_token_id
    for (i, p, a), ids in zip(flat, full, strict=True):
        token = added_token(base[i], ids, unk)
        if token is None:
            bad.append(f"{what} {a!r} is not one known token after {p!r}")
        else:
            out[i].append(token)
    _complain(f"with a {what} that is not a single token", bad)
    return out


def _pad(rows: list[list[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = True
    return out, mask


def encode(examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, *,
           prepend_bos: bool = True, equal_length: bool = True) -> TaskBatch:
    """Encode ``examples``; raise ``TokenizationError`` naming every prompt that does not fit."""
    if not examples:
        raise ValueError("no examples to encode")
    clean = [e.clean for e in examples]
    corrupted = [e.corrupted for e in examples]
    answers = answer_tokens(tokenizer, clean, [e.answers for e in examples], "answer")
    wrongs = answer_tokens(tokenizer, clean, [e.wrongs for e in examples], "wrong answer")
    bos = [tokenizer.bos_token_id] if prepend_bos and tokenizer.bos_token_id is not None else []
    clean_ids = [bos + ids for ids in token_ids(tokenizer, clean)]
    corrupted_ids = [bos + ids for ids in token_ids(tokenizer, corrupted)]
    if equal_length:
        _complain("whose clean and corrupted prompts differ in length (in tokens)",
                  [f"{len(a)} vs {len(b)} tokens: {e.clean!r} / {e.corrupted!r}"
                   for a, b, e in zip(clean_ids, corrupted_ids, examples, strict=True) if len(a) != len(b)])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    clean_t, clean_m = _pad(clean_ids, pad)
    corrupted_t, corrupted_m = _pad(corrupted_ids, pad)
    answers_t, answers_m = _pad(answers, 0)
    wrongs_t, wrongs_m = _pad(wrongs, 0)
    return TaskBatch(clean_t, corrupted_t, clean_m.sum(1), corrupted_m.sum(1), answers_t, answers_m, wrongs_t, wrongs_m)
