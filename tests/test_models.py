"""Loading models offline from local Hugging Face directories through TransformerBridge."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import AutoModelForCausalLM, Gemma2Config, Gemma2ForCausalLM, PreTrainedTokenizerFast

from circat.workers.gqa import kv_groups, ungroup_kv
from circat.workers.model_names import directory_name
from circat.workers.models import TOY, ModelLoadError, load_model, resolve_device
from circat.workers.tasks import registered_tasks
from circat.workers.tasks.encode import encode
from tests.tiny_models import SAVERS, TOKENIZER, save_gpt2, save_llama


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A small random GPT-2 with the toy tokenizer, saved as a Hugging Face directory."""
    return save_gpt2(tmp_path_factory.mktemp("tiny-gpt2"), n_layer=3, n_head=4, n_embd=64)


@pytest.mark.parametrize("arch", sorted(SAVERS))
def test_local_directory_loads_offline_with_the_same_logits_as_transformers(arch, tmp_path):
    """For the grouped-query Llama this is also the ungrouping check: the bridge runs ungrouped k/v."""
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    path = SAVERS[arch](tmp_path, n_layer=3, n_head=4, n_embd=64)
    loaded = load_model(str(path), device="cpu")
    assert (loaded.shape.n_layers, loaded.shape.n_heads, loaded.shape.d_model) == (3, 4, 64)
    batch = encode(registered_tasks()[0].examples(8, seed=0), loaded.tokenizer)
    reference = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        ours = loaded.bridge(batch.clean)
        theirs = reference(batch.clean).logits
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_engine_hooks_are_on(gpt2_dir):
    loaded = load_model(str(gpt2_dir), device="cpu")
    _, cache = loaded.bridge.run_with_cache(torch.tensor([[0, 5, 6, 7]]))
    for port in "qkv":
        assert cache[f"blocks.2.hook_{port}_input"].shape == (1, 4, 4, 64)
    assert cache["blocks.0.attn.hook_result"].shape == (1, 4, 4, 64)
    assert cache["blocks.1.hook_mlp_in"].shape == (1, 4, 64)


def test_a_model_is_loaded_once_per_process(gpt2_dir):
    assert load_model(str(gpt2_dir), device="cpu") is load_model(str(gpt2_dir), device="cpu")


def test_dtype_is_selectable(gpt2_dir):
    loaded = load_model(str(gpt2_dir), device="cpu", dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16
    assert next(loaded.bridge.parameters()).dtype == torch.bfloat16
    assert loaded is not load_model(str(gpt2_dir), device="cpu")


def test_missing_or_foreign_directories_are_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="model directory not found"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="unknown dtype 'float8'"):
        load_model(str(tmp_path), dtype="float8")


def test_hub_names_fail_clearly_when_offline():
    with pytest.raises(ModelLoadError, match="cannot load the tokenizer of 'gpt2'"):
        load_model("gpt2", device="cpu")


def test_an_empty_tokenizer_is_refused(gpt2_dir, tmp_path):
    d = tmp_path / "empty-tokenizer"
    shutil.copytree(gpt2_dir, d)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (d / f).unlink()
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab={}, unk_token=None))).save_pretrained(d)
    with pytest.raises(ModelLoadError, match="came back empty"):
        load_model(str(d), device="cpu")


def test_grouped_query_attention_is_ungrouped_with_unchanged_logits(tmp_path):
    path = save_llama(tmp_path, n_layer=2, n_head=6, n_embd=48, kv_heads=2)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    assert kv_groups(model.config) == 3
    tokens = torch.randint(1, 200, (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(tokens).logits
        assert ungroup_kv(model) == 2
        after = model(tokens).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert model.config.num_key_value_heads == 6 and kv_groups(model.config) == 1
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.weight.shape == (48, 48) and attn.v_proj.weight.shape == (48, 48)
    torch.testing.assert_close(attn.k_proj.weight[0:8], attn.k_proj.weight[16:24])  # heads 0 and 2 share group 0
    assert ungroup_kv(model) == 0


def test_grouped_query_model_exposes_a_k_and_v_input_per_head(tmp_path):
    loaded = load_model(str(save_llama(tmp_path, n_layer=2, n_head=4, n_embd=32, kv_heads=1)), device="cpu")
    _, cache = loaded.bridge.run_with_cache(torch.tensor([[0, 5, 6, 7, 8]]))
    for port in "qkv":
        assert cache[f"blocks.1.hook_{port}_input"].shape == (1, 5, 4, 32)
    assert cache["blocks.1.attn.hook_result"].shape == (1, 5, 4, 32)


def test_a_model_that_normalises_its_outputs_before_the_residual_add_is_refused(tmp_path):
    """Gemma 2 puts an RMSNorm after attention and after the MLP: per-head results are not additive."""
    cfg = Gemma2Config(vocab_size=len(TOKENIZER), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                       bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    Gemma2ForCausalLM(cfg).save_pretrained(tmp_path)
    TOKENIZER.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="does not add its attention outputs to the residual stream"):
        load_model(str(tmp_path), device="cpu")


def test_a_local_directory_is_named_by_its_weights_not_its_path(gpt2_dir, tmp_path):
    copy = shutil.copytree(gpt2_dir, tmp_path / "elsewhere")
    name = load_model(str(gpt2_dir), device="cpu").name
    assert name.startswith("gpt2-") and len(name) == len("gpt2-") + 10
    assert directory_name(str(copy)) == name
    other = save_gpt2(tmp_path / "other", n_layer=3, n_head=4, n_embd=64, seed=1)
    assert directory_name(str(other)) != name
    assert load_model(TOY, device="cpu").name == "toy"


def test_device_choice(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("CIRCAT_DEVICE", "cpu")
    assert resolve_device() == torch.device("cpu")
    monkeypatch.delenv("CIRCAT_DEVICE")
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelLoadError, match="unknown device 'tpu9'"):
        resolve_device("tpu9")
