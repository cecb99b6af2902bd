"""Circuit expressions: the grammar (precedence, parentheses, errors with positions) and their evaluation over
stored circuits (set algebra at node and edge level, layer selections, item lists, unknown ids, mixed models)."""

from __future__ import annotations

import numpy as np
import pytest

from circat.service.catalogue import Catalogue
from circat.service.circuit import Circuit, Provenance
from circat.service.errors import NotFound
from circat.service.expressions import ExpressionError, Items, Op, Ref, Select, Shared, parse, select, text_of
from circat.service.graph import graph_for
from circat.service.types import Level
from tests.helpers import SMALL

A, B, C = "c" + "a" * 23, "c" + "b" * 23, "c" + "0" * 23


def test_intersection_binds_tighter_and_commas_join():
    assert parse(f"{A} | {B} & {C}") == Op("|", Ref(A), Op("&", Ref(B), Ref(C)))
    assert parse(f"({A} | {B}) & {C}") == Op("&", Op("|", Ref(A), Ref(B)), Ref(C))
    assert parse(f"{A} - {B} | {C}") == Op("|", Op("-", Ref(A), Ref(B)), Ref(C))
    assert parse("a9.h1,m9,a5.h5->a9.h1<v>") == Items(("a9.h1", "m9", "a5.h5->a9.h1<v>"))
    assert parse("a9.h1-m9") == Op("-", Items(("a9.h1",)), Items(("m9",)))  # no edge without '>'
    assert parse(f"shared({A}, {B}, {C}; 2)") == Shared((Ref(A), Ref(B), Ref(C)), 2)
    layers = Op("|", Op("|", Select("heads", 0, 8), Select("mlps", None, None)), Select("layer", 9, 9))
    assert parse("heads(L0-L8) | mlps(all) | layer(9)") == layers
    assert text_of(parse(f" {A}|{B}&  {C} ")) == f"({A} | ({B} & {C}))"


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"), (f"{A} &", "at the end"), (f"({A} | {B}", "expected ')'"), (f"{A} {B}", f"unexpected '{B}'"),
    ("a9.h1 ? m9", "unexpected '? m9' at position 6"), (f"shared({A}, {B})", "expected ';'"),
    (f"shared({A}; 0)", "k >= 1"), ("heads(L8-L2)", "runs backwards"), ("mlps()", "expected range"),
    ("c123", "unexpected 'c123' at position 0"),
])
def test_syntax_errors_name_the_position(text, message):
    with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        parse(text)
    with pytest.raises(ExpressionError, match="at most 10"):
        parse("a0.h0" * 3, max_length=10)


def _circuit(nodes: list[str], edges: list[str] | None = None, model: str = "tiny", task: str = "t") -> Circuit:
    g = graph_for(SMALL)
    edge_mask = None if edges is None else np.isin(np.arange(g.n_edges), [g.edge_id(e) for e in edges])
    node_mask = np.isin(np.arange(g.n_nodes), [g.node_id(n) for n in [*nodes, "input", "logits"]])
    if edge_mask is not None:
        node_mask |= g.endpoint_mask(edge_mask)
    return Circuit(Provenance(model=model, task=task, method="m"), SMALL, node_mask=node_mask,
                   node_scores=np.full(g.n_nodes, np.nan), edge_mask=edge_mask,
                   edge_scores=None if edge_mask is None else np.where(edge_mask, 1.0, np.nan))


def _names(selection, level: Level) -> set[str]:
    g = graph_for(SMALL)
    mask = selection.node_mask & g.component_mask if level is Level.NODE else selection.edge_mask
    return set(g.names(level, np.flatnonzero(mask)))


@pytest.fixture
def stored(store):
    cat = Catalogue(store)
    circuits = {
        "x": _circuit([], ["a0.h0->a1.h0<q>", "a1.h0->m1", "m1->logits"], task="x"),
        "y": _circuit([], ["a0.h0->a1.h0<q>", "a1.h0->logits", "m1->logits"], task="y"),
        "z": _circuit(["a0.h1", "m2"], task="z"),
        "other": _circuit(["a0.h1"], model="elsewhere"),
    }
    ids = {k: cat.add(c) for k, c in circuits.items()}
    return store, ids


def test_set_algebra_at_edge_and_node_level(stored):
    store, ids = stored
    x, y, z = ids["x"], ids["y"], ids["z"]
    both = select(parse(f"{x} & {y}"), "tiny", SMALL, store.memberships)
    assert both.level is Level.EDGE and _names(both, Level.EDGE) == {"a0.h0->a1.h0<q>", "m1->logits"}
    assert _names(both, Level.NODE) == {"a0.h0", "a1.h0", "m1"} and both.operands == (x, y)
    only_x = select(parse(f"{x} - {y}"), "tiny", SMALL, store.memberships)
    assert _names(only_x, Level.EDGE) == {"a1.h0->m1"}
    nodes = select(parse(f"{x} & {y}"), "tiny", SMALL, store.memberships, level=Level.NODE)
    assert nodes.edge_mask is None and _names(nodes, Level.NODE) == {"a0.h0", "a1.h0", "m1"}
    mixed = select(parse(f"({x} | {z}) - heads(L1)"), "tiny", SMALL, store.memberships)
    assert mixed.level is Level.NODE and _names(mixed, Level.NODE) == {"a0.h0", "a0.h1", "m1", "m2"}
    two = select(parse(f"shared({x}, {y}, {z}; 2)"), "tiny", SMALL, store.memberships)
    assert _names(two, Level.NODE) == {"a0.h0", "a1.h0", "m1"}
    assert _names(select(parse("mlps(L1-2), a0.h1"), "tiny", SMALL, store.memberships), Level.NODE) == {
        "m1", "m2", "a0.h1"}
    listed = select(parse("a0.h0->a1.h0<q>, m1->logits"), "tiny", SMALL, store.memberships)
    assert listed.level is Level.EDGE and listed.n_edges == 2 and listed.n_components == 3


def test_empty_results_are_empty_circuits(stored):
    store, ids = stored
    empty = select(parse(f"{ids['x']} - {ids['x']}"), "tiny", SMALL, store.memberships)
    assert empty.n_edges == 0 and empty.n_components == 0
    assert _names(empty, Level.NODE) == set()


def test_unknown_ids_names_other_models_and_levels_are_refused(stored):
    store, ids = stored
    with pytest.raises(NotFound, match=f"'{A}'.*'{B}'"):
        select(parse(f"{ids['x']} | {A} | {B}"), "tiny", SMALL, store.memberships)
    with pytest.raises(ExpressionError, match=f"another model than 'tiny': {ids['other']} \\(elsewhere\\)"):
        select(parse(f"{ids['x']} & {ids['other']}"), "tiny", SMALL, store.memberships)
    with pytest.raises(ExpressionError, match=r"not in the graph.*a9.h1, a0.h0->a0.h1<q>, layer\(L7\)"):
        select(parse("a9.h1 | a0.h0->a0.h1<q> | layer(7)"), "tiny", SMALL, store.memberships)
    with pytest.raises(ExpressionError, match=f"edge level needs every operand to have edges.*{ids['z']}"):
        select(parse(f"{ids['x']} | {ids['z']}"), "tiny", SMALL, store.memberships, level=Level.EDGE)
    with pytest.raises(ExpressionError, match="at most 1 "):
        select(parse(f"{ids['x']} | {ids['y']}"), "tiny", SMALL, store.memberships, max_operands=1)
