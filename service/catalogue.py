"""The catalogue: validated writes and overlap questions over any store, by circuit id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from circat.service.cancel import checkpoint
from circat.service.circuit import Circuit
from circat.service.documents import (
    CircuitDocument,
    MibDocument,
    check_circuit,
    circuit_from_document,
    mib_to_document,
)
from circat.service.errors import CatalogueError, NotFound, StoreUnavailable
from circat.service.graph import graph_for
from circat.service.limits import Limits
from circat.service.models import KNOWN_SHAPES
from circat.service.null import UNIFORM, NullSpec, sampled, universe
from circat.service.overlap import Consensus, Matrix, PairOverlap, consensus, difference, levels, matrix, pairwise
from circat.service.progress import Progress, silent
from circat.service.stability import LevelStability, StabilityRecord, compare_runs
from circat.service.stores import CircuitFilter, CircuitStore, Stored
from circat.service.stores.base import EvaluationFilter, EvaluationRecord, Membership
from circat.service.types import Level, ModelShape


@dataclass
class Catalogue:
    """Circuits in a store, with validation on the way in and the overlap algebra on the way out."""

    store: CircuitStore
    limits: Limits = field(default_factory=Limits)

    def shape_of(self, model: str) -> ModelShape | None:
        """The shape a model is registered with in the store, else a well-known one."""
        return self.store.model_shape(model) or KNOWN_SHAPES.get(model)

    def prepare(self, doc: CircuitDocument) -> Circuit:
        """Validate a circuit document into a circuit (not stored); refused whole with every problem named."""
        return circuit_from_document(doc, self.store.model_shape, self.limits)

    def add_document(self, doc: CircuitDocument) -> str:
        """Validate and store one circuit document; refused whole with every problem named."""
        return self.store.put(self.prepare(doc))

    def add(self, circuit: Circuit) -> str:
        """Validate and store a circuit built in memory (the engine's); refused whole with every problem named."""
        return self.store.put(check_circuit(circuit, self.store.model_shape, self.limits))

    def add_many(self, circuits: Sequence[Circuit]) -> list[str]:
        """Validate every circuit, then store them all in one transaction (all or none); their ids."""
        return self.store.put_many([check_circuit(c, self.store.model_shape, self.limits) for c in circuits])

    def add_batch(self, items: Sequence[Circuit | Exception], per_transaction: int = 50,
                  progress: Progress = silent) -> list[Stored | Exception]:
        """Store many circuits, ``per_transaction`` to a transaction, each whole or not at all.

        Per item, in order: its id and whether it is new, or why it was refused (an item given as an
        exception, refused while being read, is passed through). A transaction that fails on one of its
        circuits is retried circuit by circuit, so the bad circuit rolls back alone. ``StoreUnavailable``
        ends the batch: retrying it is safe, as ids are content hashes and stored circuits are no-ops.
        """
        out: dict[int, Stored | Exception] = {i: item for i, item in enumerate(items) if isinstance(item, Exception)}
        valid: list[tuple[int, Circuit]] = []
        for i, item in enumerate(items):
            if isinstance(item, Circuit):
                try:
                    valid.append((i, check_circuit(item, self.store.model_shape, self.limits)))
                except (CatalogueError, ValueError) as exc:
                    out[i] = exc
        for start in range(0, len(valid), per_transaction):
            group = valid[start:start + per_transaction]
            try:
                out_ids: list[Stored | Exception] = list(self.store.write_many([c for _, c in group]))
            except StoreUnavailable:
                raise
            except (CatalogueError, ValueError):
                out_ids = [self._put_alone(c) for _, c in group]
            for (i, _), result in zip(group, out_ids, strict=True):
                out[i] = result
            progress(start + len(group), len(valid), "circuits stored")
        return [out[i] for i in range(len(items))]

    def _put_alone(self, circuit: Circuit) -> Stored | Exception:
        try:
            return self.store.write_many([circuit])[0]
        except StoreUnavailable:
            raise
        except (CatalogueError, ValueError) as exc:
            return exc

    def add_mib(self, mib: MibDocument, model: str, task: str, method: str, **provenance: Any) -> str:
        """Validate and store a MIB / EAP-IG circuit file with the provenance given."""
        return self.add_document(mib_to_document(mib, model, task, method, **provenance))

    def add_evaluations(self, records: Sequence[EvaluationRecord]) -> list[Stored]:
        """Store evaluation records (identical ones are no-ops); ``NotFound`` when one names a missing circuit."""
        return self.store.put_evaluations(records)

    def evaluations(self, flt: EvaluationFilter | None = None, limit: int = 50,
                    offset: int = 0) -> tuple[list[EvaluationRecord], int]:
        """One page of stored evaluations, newest first, and their total."""
        return self.store.evaluations(flt or EvaluationFilter(), limit, offset)

    def evaluations_of(self, circuits: Sequence[Circuit]) -> list[EvaluationRecord]:
        """The stored evaluations that read only these circuits (a circuit, or expressions over them), newest first."""
        ids = {c.id for c in circuits}
        found: dict[str, EvaluationRecord] = {}
        for cid in ids:
            checkpoint()
            for r in self.store.evaluations(EvaluationFilter(circuit=cid), self.limits.max_page)[0]:
                if set(r.circuits) <= ids:
                    found[r.id] = r
        return sorted(found.values(), key=lambda r: r.created_at, reverse=True)

    def get(self, circuit_id: str) -> Circuit:
        return self.store.get(circuit_id)

    def add_stability(self, record: StabilityRecord) -> Stored:
        """Store a resampled run's stability summary (an identical one is a no-op); ``NotFound`` when it names a
        missing circuit."""
        return self.store.put_stability(record)

    def stabilities(self, circuit: str | None = None, limit: int = 50,
                    offset: int = 0) -> tuple[list[StabilityRecord], int]:
        """One page of stability summaries (those holding ``circuit``, if given), newest first, and their total."""
        return self.store.stabilities(circuit, limit, offset)

    def stability(self, ref: str) -> StabilityRecord:
        """The stability summary with id ``ref``, or the newest holding circuit ``ref``; ``NotFound`` otherwise."""
        if not ref.startswith("c"):
            return self.store.stability(ref)
        found = self._run_of(ref)
        if found is None:
            raise NotFound(f"no stability summary holds circuit {ref!r} (it was not made by a resampled run)")
        return found[0]

    def _run_of(self, circuit_id: str) -> tuple[StabilityRecord, LevelStability] | None:
        """The newest stability summary holding ``circuit_id``, with the level holding it."""
        found = self.store.stabilities(circuit_id, 1)[0]
        level = found[0].level_of(circuit_id) if found else None
        return None if level is None else (found[0], level)

    def stabilities_of(self, circuits: Sequence[Circuit]) -> dict[str, dict[Level, dict[str, float]]]:
        """Per circuit made by a resampled run, its items' frequencies across that run's resamples (the newest run
        holding it), at node and, for edge circuits, edge level."""
        out = {}
        for c in circuits:
            checkpoint()
            if (found := self._run_of(c.id)) is not None:
                frequencies = {lv: found[1].frequency_of(lv) for lv in (Level.NODE, Level.EDGE)}
                out[c.id] = {lv: f for lv, f in frequencies.items() if f}
        return out

    def overlap(self, a: str, b: str, null: NullSpec = UNIFORM) -> list[PairOverlap]:
        """How ``a`` and ``b`` overlap at each level, with the null model's figures and, where both come from
        resampled runs (two different ones), how their runs compare."""
        members = self.store.memberships([a, b])
        self._check_null(members, levels(members), null)
        pairs = pairwise(*members, null)
        run_a, run_b = self._run_of(a), self._run_of(b)
        if run_a is None or run_b is None or run_a[0].id == run_b[0].id:
            return pairs
        (ra, ga), (rb, gb) = run_a, run_b
        group = self.store.memberships([*ga.circuits, *gb.circuits])
        at = len(ga.circuits)
        return [replace(p, runs=compare_runs(group[:at], group[at:], p.level, (ra.id, rb.id))) for p in pairs]

    def consensus(self, ids: list[str], min_support: int | None = None,
                  null: NullSpec = UNIFORM) -> list[Consensus]:
        self.limits.check_ids(len(ids))
        members = self.store.memberships(ids)
        self._check_null(members, levels(members), null, all_held=min_support in (None, len(ids)))
        return consensus(members, min_support, null)

    def matrix(self, ids: list[str], null: NullSpec = UNIFORM) -> Matrix:
        self.limits.check_ids(len(ids))
        members = self.store.memberships(ids)
        edges = any(m.edges is not None for m in members)  # the matrix answers each pair that has edges
        self._check_null(members, [Level.NODE, Level.EDGE] if edges else [Level.NODE], null)
        return matrix(members, null)

    def _check_null(self, members: list[Membership], at: list[Level], null: NullSpec, all_held: bool = True) -> None:
        """Refuse, before any draw, a null model that would draw more than the limits allow at the levels ``at``
        (exact figures draw nothing)."""
        if not members:
            return
        graph = graph_for(members[0].shape)
        drawn = [universe(graph, level) for level in at if sampled(level, null, all_held)]
        if drawn:
            self.limits.check_null(null.samples, max(drawn))

    def select(self, ids: list[str], flt: CircuitFilter, limit: int = 20) -> list[Circuit]:
        """The circuits named by ``ids``, else the newest ``limit`` matching ``flt``."""
        if not ids:
            self.limits.check_ids(limit)
            ids = [s.id for s in self.store.summaries(flt, limit)[0]]
        self.limits.check_ids(len(ids))
        circuits = []
        for i in dict.fromkeys(ids):
            checkpoint()  # a timed-out report stops loading
            circuits.append(self.store.get(i))
        return circuits

    def difference(self, a: str, b: str) -> dict[Level, list[str]]:
        return difference(*self.store.memberships([a, b]))

    def containing(self, model: str, name: str) -> tuple[Level, list[str]]:
        """Circuits of ``model`` that hold node or edge ``name`` (level inferred from the name)."""
        shape = self.store.model_shape(model)
        if shape is None:
            raise NotFound(f"no circuits for model {model!r}")
        g = graph_for(shape)
        level = Level.EDGE if "->" in name else Level.NODE
        index = g.find_edge(name) if level is Level.EDGE else g.node_index.get(name)
        if index is None:
            what = g.why_not_edge(name) if level is Level.EDGE else f"{name!r} is not a node of {model}"
            raise ValueError(what)
        return level, self.store.containing(model, index, level)
