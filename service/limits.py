"""Bounds on the work one request or import may ask for, checked before any work is done.

Each limit has a ``CIRCAT_<NAME>`` variable (``CIRCAT_MAX_LAYERS``, ``CIRCAT_REQUEST_TIMEOUT_S``, ...).
The defaults admit the largest real models (Llama-3.1-8B: 32 layers x 32 heads, 1.6 M edges; GPT-2 XL,
2.2 M edges; up to 128 layers or 128 heads) and refuse what would make the server build or read more
than that. The server's own bounds (concurrent heavy reads, connections, header time) are here too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from circat.service.errors import LimitExceeded
from circat.service.graph import edge_count
from circat.service.types import ModelShape

MAX_NAME_LENGTH = 256
"""Longest model, task, method, family, metric or item name (fixed: part of the JSON Schema)."""


@dataclass(frozen=True)
class Limits:
    """Configured limits; ``Limits.from_env()`` reads them."""

    max_layers: int = 128
    max_heads: int = 128
    max_edges: int = 2_500_000
    max_items: int = 2_600_000
    max_body_bytes: int = 256 * 1024 * 1024
    max_spec_bytes: int = 8 * 1024 * 1024
    max_task_bytes: int = 4 * 1024 * 1024
    max_json_values: int = 12_000_000
    max_ids: int = 100
    max_page: int = 1000
    max_batch: int = 1000
    max_report_circuits: int = 20
    max_expression_length: int = 4096
    max_top_edges: int = 5000
    max_null_cells: int = 20_000_000
    max_heavy: int = 4
    max_connections: int = 256
    header_timeout_s: float = 10.0
    request_timeout_s: float = 120.0

    @staticmethod
    def from_env() -> Limits:
        """Limits from ``CIRCAT_MAX_LAYERS``, ``CIRCAT_MAX_HEADS``, ... (defaults when unset)."""
        values: dict[str, int | float] = {}
        for f in fields(Limits):
            var = env_name(f.name)
            raw = os.environ.get(var)
            if raw:
                kind = float if f.type in ("float", float) else int
                try:
                    values[f.name] = kind(raw)
                except ValueError:
                    raise ValueError(f"{var} must be a number, got {raw!r}") from None
                if values[f.name] <= 0:
                    raise ValueError(f"{var} must be positive, got {raw!r}")
        return Limits(**values)

    def check_shape(self, shape: ModelShape) -> None:
        """Refuse a shape whose graph would exceed the limits, before anything is built."""
        _check("max_layers", shape.n_layers, self.max_layers, "layers in a model shape")
        _check("max_heads", shape.n_heads, self.max_heads, "heads per layer in a model shape")
        _check("max_edges", edge_count(shape), self.max_edges, "edges in a model's graph")

    def check_items(self, n_items: int) -> None:
        """Refuse a circuit document with more nodes and edges than allowed."""
        _check("max_items", n_items, self.max_items, "nodes and edges in one circuit")

    def check_ids(self, n_ids: int) -> None:
        """Refuse an overlap question over more circuits than allowed."""
        _check("max_ids", n_ids, self.max_ids, "circuit ids in one question")

    def check_null(self, samples: int, n_items: int) -> None:
        """Refuse a sampled null model that would draw more than allowed (samples x items of the model)."""
        _check("max_null_cells", samples * n_items, self.max_null_cells,
               f"null-model cells (samples x {n_items} items of the model)")

    def check_batch(self, n_circuits: int) -> None:
        """Refuse a batch import of more circuits than allowed."""
        _check("max_batch", n_circuits, self.max_batch, "circuits in one batch")

    def check_task_bytes(self, n_bytes: int) -> None:
        """Refuse a custom task whose lines add up to more text than allowed."""
        _check("max_task_bytes", n_bytes, self.max_task_bytes, "bytes of task_lines in one job spec")


def env_name(field_name: str) -> str:
    """The environment variable of a limit."""
    return f"CIRCAT_{field_name.upper()}"


def _check(name: str, value: int, maximum: int, what: str) -> None:
    if value > maximum:
        raise LimitExceeded(env_name(name), value, maximum, what)
