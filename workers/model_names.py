"""The name a model is catalogued under: stable across machines, one name per set of weights.

A built-in name gives its variant's catalogue name (``smollm2-135m-instruct-q4_1``), a hub name
stays itself, the toy is ``toy``. A local directory is named by what it holds, not where it is:
the directory of a built-in model by its marker, any other by its configured name (or model
type) plus a short hash of its weight files, so two copies of the same weights share one name.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from circat.service.models import PACKAGED

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
HASH_CHARS = 10


def catalogue_name(spec: str, source: str) -> str:
    """The catalogue's name for model ``spec`` loaded from ``source`` (a hub name or a directory)."""
    if spec in PACKAGED:
        return PACKAGED[spec].catalogue_name
    path = Path(source)
    if not path.is_dir():
        return spec
    return directory_name(str(path.resolve()))


@cache
def directory_name(path: str) -> str:
    """The name of a local model directory: its marker's name, else ``<configured name>-<weights hash>``."""
    root = Path(path)
    marker = root / "circat-model.json"
    if marker.is_file():
        return str(json.loads(marker.read_text())["catalogue_name"])
    config = json.loads((root / "config.json").read_text())
    return f"{_configured_name(config)}-{weights_hash(root)[:HASH_CHARS]}"


def _configured_name(config: dict[str, object]) -> str:
    """The hub name a config remembers (``_name_or_path``) unless it is a path, else the model type."""
    remembered = str(config.get("_name_or_path") or "")
    if remembered and not remembered.startswith((".", "/", "~")) and not Path(remembered).is_absolute():
        return remembered.rsplit("/", 1)[-1].lower()
    return str(config.get("model_type") or "model")


def weights_hash(root: Path) -> str:
    """sha256 over the weight files of a directory, by relative name and content, in name order."""
    digest = hashlib.sha256()
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise ValueError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {root}")
    for f in files:
        digest.update(str(f.relative_to(root)).encode() + b"\0")
        with f.open("rb") as handle:
            for chunk in iter(lambda h=handle: h.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()
