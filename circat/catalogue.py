"""``circat.open()``: a catalogue in a notebook, with the CLI's listings, overlap questions and reports.

Every method calls the catalogue core the CLI and the REST API call (``circat.service.catalogue``); this
module only opens the store, converts arguments and wraps results in displayable views.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from circat.service.catalogue import Catalogue as Core
from circat.service.limits import Limits
from circat.service.literature import add_literature
from circat.service.null import DEFAULT_SAMPLES, NullSpec
from circat.service.report.page import circuit_labels
from circat.service.stores import CircuitFilter, open_store
from circat.service.stores.base import EvaluationFilter
from circat.service.types import NullModel
from circat.views import CircuitView, MatrixView, Overlap, Rows, Shared


def open(url: str | None = None) -> Catalogue:
    """Open the catalogue at ``url`` (``sqlite:///PATH``, ``bolt://HOST:PORT``); by default the configured one
    (``CIRCAT_STORE_URL``), else the embedded SQLite catalogue. Close it with ``.close()`` or ``with``."""
    return Catalogue(Core(open_store(url), Limits.from_env()))


def _null(null: str | NullModel, samples: int, seed: int) -> NullSpec:
    return NullSpec(NullModel(null), samples, seed)


class Catalogue:
    """An open catalogue: list, get and compare circuits, read evaluations, write a report."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the store's connections."""
        self.core.store.close()

    def list(self, model: str | None = None, task: str | None = None, family: str | None = None,
             method: str | None = None, min_faithfulness: float | None = None, limit: int = 50,
             offset: int = 0) -> Rows:
        """Circuit summaries, newest first, with filters (``.to_pandas()`` for a DataFrame)."""
        flt = CircuitFilter(model, task, family, method, min_faithfulness)
        items, total = self.core.store.summaries(flt, limit, offset)
        return Rows(items, total, f"{len(items)} of {total} circuit(s)")

    def add_literature(self) -> dict[str, str]:
        """Store the published GPT-2 small circuits (IOI, greater-than, the sequence tasks); their ids by task."""
        return add_literature(self.core)

    def get(self, circuit_id: str) -> CircuitView:
        """One circuit by id; it draws its diagram in Jupyter."""
        return CircuitView(self.core.get(circuit_id))

    def overlap(self, a: str, b: str, null: str | NullModel = NullModel.UNIFORM, samples: int = DEFAULT_SAMPLES,
                seed: int = 0) -> Overlap:
        """How circuits ``a`` and ``b`` overlap per level, with what chance (``null``) would give."""
        return Overlap(self.core.overlap(a, b, _null(null, samples, seed)))

    def shared(self, ids: list[str], min_support: int | None = None, null: str | NullModel = NullModel.UNIFORM,
               samples: int = DEFAULT_SAMPLES, seed: int = 0) -> Shared:
        """The sub-circuit held by at least ``min_support`` (default: all) of the circuits, with support counts."""
        return Shared(self.core.consensus(list(ids), min_support, _null(null, samples, seed)))

    def matrix(self, ids: list[str], null: str | NullModel = NullModel.UNIFORM, samples: int = DEFAULT_SAMPLES,
               seed: int = 0) -> MatrixView:
        """The pairwise Jaccard matrix of the circuits; a heatmap in Jupyter."""
        m = self.core.matrix(list(ids), _null(null, samples, seed))
        labels = circuit_labels([self.core.get(i) for i in m.ids])
        return MatrixView(m, [labels[i] for i in m.ids])

    def diff(self, a: str, b: str) -> dict[str, list[str]]:
        """What circuit ``a`` holds that ``b`` lacks, per level (``node``, ``edge``)."""
        return {level.value: items for level, items in self.core.difference(a, b).items()}

    def containing(self, model: str, item: str) -> tuple[str, list[str]]:
        """The level of ``item`` (a component or an edge name) and the circuits of ``model`` that hold it."""
        level, ids = self.core.containing(model, item)
        return level.value, ids

    def evaluations(self, circuit: str | None = None, model: str | None = None, task: str | None = None,
                    mode: str | None = None, min_value: float | None = None, limit: int = 50,
                    offset: int = 0) -> Rows:
        """Stored evaluations (``circat evaluate``, ``circat transfer``), newest first, with filters."""
        items, total = self.core.evaluations(EvaluationFilter(circuit, model, task, mode, min_value), limit, offset)
        return Rows(items, total, f"{len(items)} of {total} evaluation(s)")

    def evaluate(self, expressions: list[str], model: str, task: str, device: str | None = None,
                 progress: bool = True, save: bool = False, **options: Any) -> Rows:
        """Evaluate circuits or expressions (``A & B``, ``shared(A, B, C)``, ``heads(L0-L3)`` ...) on ``task`` of
        ``model`` (options as ``circat evaluate``: ``mode``, ``metric``, ``ablation``, ``n``, ``seed`` ...); the
        evaluations are stored and returned."""
        from circat.run import evaluate

        return evaluate(self, expressions, model, task, device, progress, save, **options)

    def transfer(self, model: str, tasks: list[str] | None = None, circuits: list[str] | None = None,
                 expressions: list[str] | None = None, device: str | None = None, progress: bool = True,
                 **options: Any) -> Any:
        """The transfer matrix of ``model``: circuits and expressions (rows) evaluated on tasks (columns), each
        cell stored as an evaluation; a table in Jupyter (``.to_pandas()`` for a DataFrame)."""
        from circat.run import transfer

        return transfer(self, model, tasks, circuits, expressions, device, progress, **options)

    def report(self, ids: list[str], out: str | Path = "report.html", methods: bool = False) -> Path:
        """Write the HTML report of the circuits (the CLI's ``circat report``); its path."""
        from circat.service.cli.main import write_report

        circuits = self.core.select(list(ids), CircuitFilter())
        return Path(write_report(self.core, circuits, Path(out), as_json=True, methods=methods))

    def __repr__(self) -> str:
        return f"<circat.Catalogue {type(self.core.store).__name__}>"
