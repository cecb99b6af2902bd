"""The API fuzzer (schemathesis, every check) against a live server: tests/test_fuzz.py and bench/fuzz.py.

The store is seeded with the literature circuits and the fuzzer draws ids, models and component
names from them half of the time, so generated requests reach real circuits, not only 404s.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from circat.service.catalogue import Catalogue
from circat.service.literature import literature_documents
from circat.service.stores import open_store

# Operations whose valid answers include 413/422 for schema-valid input, because what makes the
# input valid depends on stored data, which JSON Schema cannot say: item names must exist in the
# model's graph (whose shape is registered or given), compared circuits must share one model,
# min_support must not exceed the number of ids, a job's task must be registered unless its lines are given,
# an evaluation's expressions must parse and name stored circuits of one model.
SEMANTIC = [
    ("POST", "^/circuits$"), ("POST", "^/circuits/mib$"), ("GET", "^/components/"),
    ("GET", "^/overlap$"), ("GET", "^/diff$"), ("GET", "^/consensus$"), ("GET", "^/matrix$"),
    ("POST", "^/jobs$"), ("POST", "^/evaluations$"),
]


def seed(store_url: str) -> list[str]:
    """Store the literature circuits; their ids."""
    with open_store(store_url) as store:
        cat = Catalogue(store)
        return [cat.add_document(d) for d in literature_documents()]


def config(ids: list[str], key: str | None = None) -> str:
    """A schemathesis.toml for the seeded catalogue (with the bearer key when one is set)."""
    lines = [
        f"[dictionaries.circuits]\nvalues = {json.dumps(ids)}",
        '[dictionaries.models]\nvalues = ["gpt2"]',
        '[dictionaries.components]\nvalues = ["a9.h1", "a0.h1", "m8", "a5.h5->a9.h1<v>", "input->a0.h0<q>"]',
        "[parameters]",
        *(f'{p} = {{ dictionary = "circuits", probability = 0.5 }}' for p in ("circuit_id", "a", "b", "ids")),
        'model = { dictionary = "models", probability = 0.5 }',
        'name = { dictionary = "components", probability = 0.5 }',
    ]
    if key:
        lines.insert(0, f'headers = {{ Authorization = "Bearer {key}" }}')
    for method, path in SEMANTIC:
        lines.append(f'[[operations]]\ninclude-method = "{method}"\ninclude-path-regex = "{path}"\n'
                     '[operations.checks.positive_data_acceptance]\n'
                     'expected-statuses = ["2xx", "401", "404", "413", "422"]')
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class FuzzRun:
    """What one schemathesis run did."""

    returncode: int
    generated: int
    failures: int
    output: str


def fuzz(url: str, config_file: Path, max_examples: int, seed_value: int = 1, workers: int = 1) -> FuzzRun:
    """Run ``schemathesis run`` with all checks; parse its counts."""
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config_file), "run",
           f"{url}/openapi.json", "--checks", "all", "--max-examples", str(max_examples), "--seed", str(seed_value),
           "--workers", str(workers), "--no-color", "--request-timeout", "30", "--suppress-health-check", "all"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=config_file.parent)
    out = done.stdout + done.stderr
    generated = re.search(r"(\d+) generated", out)
    failed = re.search(r"(\d+) unique failures?", out)
    return FuzzRun(done.returncode, int(generated[1]) if generated else 0, int(failed[1]) if failed else 0, out)
