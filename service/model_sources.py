"""Which models a job submitted over REST may name: built-in names, hub names, directories under configured roots.

A REST client never chooses which files on the server's disk a worker reads: a local directory is
accepted only under one of ``CIRCAT_MODEL_ROOTS`` (default: the model cache; empty: none), named by its
absolute path (``~`` is never expanded, relative paths are refused); hub names only while
``CIRCAT_HUB_MODELS`` is on (default: unless ``HF_HUB_OFFLINE=1``). Every refusal has one message, so
the answer never tells whether a path exists. The CLI loads any local directory for its own user.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from circat.service.models import PACKAGED

BUILTIN = ("toy", *PACKAGED)
HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")


class ModelRefused(ValueError):
    """A model a REST job may not name."""


def refusal(hub: bool) -> str:
    """The one message of every refused model name."""
    hub_part = "a hub name (org/name), " if hub else ""
    return f"model must be a built-in name ({', '.join(BUILTIN)}), {hub_part}or a model directory under a root " \
           "of CIRCAT_MODEL_ROOTS, by its absolute path"


def check_rest_model(name: str, roots: Sequence[str], hub: bool) -> None:
    """Refuse (``ModelRefused``) a model that a job submitted over REST may not name."""
    if name in BUILTIN:
        return
    if name.startswith("/") and "\0" not in name and _under(name, roots):
        return
    if hub and HUB_NAME.fullmatch(name) and ".." not in name:
        return
    raise ModelRefused(refusal(hub))


def _under(path: str, roots: Sequence[str]) -> bool:
    """Whether ``path``, links resolved, lies inside one of ``roots`` (links resolved too)."""
    real = os.path.realpath(path)
    for root in roots:
        top = os.path.realpath(root)
        if real != top and os.path.commonpath([real, top]) == top:
            return True
    return False
