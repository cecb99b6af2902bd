"""Small models for the tests (random GPT-2 and grouped-query Llama, with planted structure) and their tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from circat.workers.models import LoadedModel, load_model
from circat.workers.tasks import registered_tasks
from circat.workers.toy.train import toy_tokenizer

TOKENIZER = toy_tokenizer(registered_tasks())


LINEAR_EPS = 1e10


def save_gpt2(path: Path, n_layer: int, n_head: int, n_embd: int, seed: int = 0,
              silent_heads: tuple[tuple[int, int], ...] = (), silent_mlps: tuple[int, ...] = (),
              linear_norms: bool = False) -> Path:
    """A random GPT-2 with the toy tokenizer; listed heads and MLPs get zero output weights.
    ``linear_norms``: every LayerNorm's epsilon dwarfs the residual's variance and its gain makes up
    the scale, so each norm is an affine map (centre, scale, shift)."""
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(TOKENIZER), n_positions=32, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                     bos_token_id=0, eos_token_id=0, layer_norm_epsilon=LINEAR_EPS if linear_norms else 1e-5)
    model = GPT2LMHeadModel(cfg)
    d_head = n_embd // n_head
    with torch.no_grad():
        if linear_norms:
            for module in model.modules():
                if isinstance(module, torch.nn.LayerNorm):
                    module.weight.mul_(LINEAR_EPS**0.5)
        for layer, head in silent_heads:
            model.transformer.h[layer].attn.c_proj.weight[head * d_head:(head + 1) * d_head] = 0
        for layer in silent_mlps:
            model.transformer.h[layer].mlp.c_proj.weight.zero_()
    model.save_pretrained(path)
    TOKENIZER.save_pretrained(path)
    return path


def save_llama(path: Path, n_layer: int, n_head: int, n_embd: int, seed: int = 0, kv_heads: int = 2,
               silent_heads: tuple[tuple[int, int], ...] = (), silent_mlps: tuple[int, ...] = ()) -> Path:
    """A random Llama (RMSNorm, rotary, gated MLP) with ``kv_heads`` key/value heads shared by its
    query heads; listed heads and MLPs get zero output weights."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(TOKENIZER), hidden_size=n_embd, intermediate_size=2 * n_embd,
                      num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=kv_heads,
                      max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    d_head = n_embd // n_head
    with torch.no_grad():
        for layer, head in silent_heads:
            model.model.layers[layer].self_attn.o_proj.weight[:, head * d_head:(head + 1) * d_head] = 0
        for layer in silent_mlps:
            model.model.layers[layer].mlp.down_proj.weight.zero_()
    model.save_pretrained(path)
    TOKENIZER.save_pretrained(path)
    return path


SAVERS = {"gpt2": save_gpt2, "llama": save_llama}
"""the architectures the known-answer tests run on"""


def load(path: Path) -> LoadedModel:
    return load_model(str(path), device="cpu")


def save_two_paths(path: Path, first_tokens: set[int], second_tokens: set[int], seed: int = 5) -> Path:
    """Two planted task paths: a 2-layer GPT-2 (linear norms) whose only live components are a0.h0 and a0.h1.

    a0.h0 writes only along ``a`` and a0.h1 only along ``b`` (orthonormal, both orthogonal to the ones vector,
    so the affine final norm keeps them apart); the unembedding of ``first_tokens`` is made orthogonal to ``b``
    and that of ``second_tokens`` orthogonal to ``a``. So the logits of the first tokens move with a0.h0 alone
    and those of the second with a0.h1 alone: each head carries exactly the tasks whose answers are its tokens.
    """
    live = {(0, 0), (0, 1)}
    silent = tuple((layer, h) for layer in range(2) for h in range(4) if (layer, h) not in live)
    save_gpt2(path, n_layer=2, n_head=4, n_embd=32, seed=seed, silent_heads=silent, silent_mlps=(0, 1),
              linear_norms=True)
    model = GPT2LMHeadModel.from_pretrained(path)
    a, b = torch.zeros(32), torch.zeros(32)
    a[0], a[1], b[2], b[3] = 1, -1, 1, -1
    a, b = a / a.norm(), b / b.norm()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        proj = model.transformer.h[0].attn.c_proj
        for head, direction in ((0, a), (1, b)):
            rows = slice(head * 8, (head + 1) * 8)
            proj.weight[rows] = 100 * torch.randn(8, 1, generator=generator) * direction[None]
        proj.bias.zero_()
        unembed = model.lm_head.weight  # tied with the token embedding
        for tokens, away in ((first_tokens, b), (second_tokens, a)):
            for t in tokens:
                unembed[t] -= (unembed[t] @ away) * away
    model.save_pretrained(path)
    return path
