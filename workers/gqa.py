"""Grouped-query attention, ungrouped: one key and value projection per query head.

MIB names a ``<k>`` and a ``<v>`` input for every head, but a grouped-query model computes one
key and value per group of query heads. Repeating each group's projection rows for every query
head of the group (weights, and biases where present) gives each head its own k and v input
while leaving the model's function unchanged: the attention module repeats the shared keys
and values for its query heads anyway.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


def kv_groups(config: PretrainedConfig) -> int:
    """How many query heads share one key/value head (1 for plain multi-head attention)."""
    n_heads = getattr(config, "num_attention_heads", None)
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    if not n_heads or n_heads % n_kv:
        return 1
    return n_heads // n_kv


def _repeat_rows(linear: nn.Linear, n_kv: int, groups: int) -> nn.Linear:
    """A copy of ``linear`` whose output rows of each key/value head are repeated ``groups`` times."""
    d_head = linear.out_features // n_kv
    weight = linear.weight.detach().view(n_kv, d_head, -1).repeat_interleave(groups, 0).reshape(-1, linear.in_features)
    out = nn.Linear(linear.in_features, weight.shape[0], bias=linear.bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if linear.bias is not None:
            out.bias.copy_(linear.bias.detach().view(n_kv, d_head).repeat_interleave(groups, 0).reshape(-1))
    out.requires_grad_(linear.weight.requires_grad)
    return out


def ungroup_kv(model: PreTrainedModel) -> int:
    """Expand every grouped attention module of ``model`` in place; return how many were expanded.

    Works on the transformers attention modules that keep ``k_proj``/``v_proj`` and a
    ``num_key_value_groups`` (Llama, Mistral, Qwen2, Gemma 2 and 3, SmolLM). The config then
    says ``num_key_value_heads == num_attention_heads``.
    """
    config = model.config
    groups = kv_groups(config)
    if groups == 1:
        return 0
    n_kv = config.num_key_value_heads
    expanded = 0
    for module in model.modules():
        if getattr(module, "num_key_value_groups", 1) != groups:
            continue
        k, v = getattr(module, "k_proj", None), getattr(module, "v_proj", None)
        if not isinstance(k, nn.Linear) or not isinstance(v, nn.Linear):
            raise ValueError(f"cannot ungroup attention module {type(module).__name__}: no k_proj/v_proj")
        module.k_proj, module.v_proj = _repeat_rows(k, n_kv, groups), _repeat_rows(v, n_kv, groups)
        module.num_key_value_groups = 1
        expanded += 1
    if expanded != config.num_hidden_layers:
        raise ValueError(f"found {expanded} grouped attention modules in a model of {config.num_hidden_layers} layers")
    config.num_key_value_heads = config.num_attention_heads
    return expanded
