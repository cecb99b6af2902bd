"""Shapes of well-known models, so circuits for them validate without weights."""

from __future__ import annotations

from service.types import ModelShape

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
}
