"""The self-contained HTML report of a set of circuits: provenance, overlap, consensus, diagrams, curves.

Everything is inlined (SVG and CSS, no script, no external asset), so the file opens from disk
without a network. Overlap sections are per model (circuits of different models do not compare).
In a model's diagrams, the components that every circuit of that model in the report holds are
ringed in gold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from html import escape

from circat.service.annotations import faithfulness_interval
from circat.service.annotations import problems as annotation_problems
from circat.service.bootstrap import with_interval
from circat.service.cancel import checkpoint
from circat.service.circuit import Circuit
from circat.service.effects import EffectsView
from circat.service.overlap import consensus, matrix
from circat.service.report.components import components_section
from circat.service.report.curves import curves_svg, stored_curves
from circat.service.report.diagram import DEFAULT_TOP_EDGES, DiagramOptions, circuit_svg
from circat.service.report.heatmap import ALPHA, heatmap_svg
from circat.service.report.methods import methods_section
from circat.service.report.transfer import transfer_svg, transfer_views
from circat.service.stores.base import EvaluationRecord, Membership
from circat.service.types import Level

Frequencies = dict[str, dict[Level, dict[str, float]]]
"""per circuit id, per level, each item's share of the resamples holding it"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f2f2f2; }
.figures { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; max-width: 560px; }
.bar { display: inline-block; height: 10px; background: #2f6db5; vertical-align: middle; }
.key span { margin-right: 14px; font-size: 12px; }
"""
KEY = ('<p class="key"><span style="color:#2f6db5">● head</span><span style="color:#d9822b">■ MLP</span>'
       '<span style="color:#555">● input</span><span style="color:#3a9e5a">● logits</span>'
       '<span style="color:#2166ac">— positive score</span><span style="color:#b2182b">— negative score</span>'
       '<span>q solid, k dashed, v dotted</span><span style="color:#e0a800">◯ shared by all</span></p>')


def report_html(circuits: list[Circuit], title: str = "Circuit report", top_edges: int = DEFAULT_TOP_EDGES,
                evaluations: Sequence[EvaluationRecord] = (), effects: Sequence[EffectsView] = (),
                frequencies: Frequencies | None = None, methods: bool = False) -> str:
    """One self-contained HTML page for ``circuits`` (with the transfer matrices of their stored ``evaluations``,
    the component ``effects`` given, for circuits of resampled runs their components' ``frequencies`` as
    shading, and with ``methods`` the methods leaderboard per model and task); a circuit whose annotations do
    not fit their schema (stored before they were checked) is shown without its curves, and the page says why."""
    by_model: dict[str, list[Circuit]] = defaultdict(list)
    for c in circuits:
        by_model[c.provenance.model].append(c)
    labels = circuit_labels(circuits)
    skipped = {c.id: found for c in circuits if (found := annotation_problems(c.annotations))}
    body = [f"<h1>{escape(title)}</h1>", _provenance_table(circuits, labels), _skipped_note(skipped, labels)]
    for model, group in by_model.items():
        checkpoint()
        body.append(f"<h2>{escape(model)}</h2>")
        body.append(_model_section(group, labels, top_edges, frequencies or {}))
    body.append(_function_section(circuits, evaluations, labels))
    body.append(components_section(effects))
    if methods:
        body.append(methods_section(circuits, labels))
    body.append(_curves_section([c for c in circuits if c.id not in skipped], labels))
    body.append(_ablation_section(circuits, labels))
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>" + "".join(body) + "</body></html>")


def _skipped_note(skipped: dict[str, list[str]], labels: dict[str, str]) -> str:
    if not skipped:
        return ""
    items = "".join(f"<li>{escape(labels[cid])} ({cid}): {escape('; '.join(found[:5]))}</li>"
                    for cid, found in skipped.items())
    return f'<div class="skipped"><p>Curves not drawn for these circuits, whose annotations do not fit their ' \
           f"schema:</p><ul>{items}</ul></div>"


def circuit_labels(circuits: list[Circuit]) -> dict[str, str]:
    """A short readable name per circuit: task / method, with a number where two would read alike."""
    seen: dict[str, int] = defaultdict(int)
    out = {}
    for c in circuits:
        base = f"{c.provenance.task} / {c.provenance.method}"
        seen[base] += 1
        out[c.id] = base if seen[base] == 1 else f"{base} #{seen[base]}"
    return out


def _provenance_table(circuits: list[Circuit], labels: dict[str, str]) -> str:
    head = ("<tr><th>circuit</th><th>id</th><th>model</th><th>task</th><th>family</th><th>method</th>"
            "<th>faithfulness</th><th>nodes</th><th>edges</th><th>created</th><th>citation</th></tr>")
    rows = []
    for c in circuits:
        p = c.provenance
        faith = with_interval(p.faithfulness, faithfulness_interval(c.annotations)) or ""
        edges = str(c.n_edges) if c.has_edges else "-"
        cells = [labels[c.id], c.id, p.model, p.task, p.task_family or "", p.method, faith, str(c.n_nodes), edges,
                 p.created_at.strftime("%Y-%m-%d %H:%M"), p.citation or ""]
        rows.append("<tr>" + "".join(f"<td>{escape(x)}</td>" for x in cells) + "</tr>")
    return f"<h2>Provenance</h2><table class=\"provenance\">{head}{''.join(rows)}</table>"


def _members(group: list[Circuit]) -> list[Membership]:
    return [Membership.of(c) for c in group]


def _model_section(group: list[Circuit], labels: dict[str, str], top_edges: int, frequencies: Frequencies) -> str:
    parts = []
    shared: frozenset[str] = frozenset()
    support: dict[str, int] = {}
    if len(group) > 1:
        members = _members(group)
        grid = matrix(members)
        names = [labels[i] for i in grid.ids]
        maps = [heatmap_svg(names, grid.node, "node Jaccard", grid.node_p, grid.node_expected)]
        if all(c.has_edges for c in group):
            maps.append(heatmap_svg(names, grid.edge, "edge Jaccard", grid.edge_p, grid.edge_expected))
        parts.append(f"<h3>Overlap</h3><p>Grey cells are not above chance: two random circuits of the same sizes "
                     f"share at least as much with probability p &ge; {ALPHA} (uniform null; hover for the "
                     f"expected Jaccard).</p><div class=\"figures\">" + "".join(maps) + "</div>")
        node_level = next(c for c in consensus(members, min_support=1) if c.level is Level.NODE)
        support = node_level.support
        shared = frozenset(name for name, k in support.items() if k == len(group))
        parts.append(_consensus_table(support, len(group)))
    figures = []
    for c in group:
        checkpoint()
        frequency = frequencies.get(c.id, {}).get(Level.NODE)
        svg = circuit_svg(c, DiagramOptions(top_edges=top_edges, shared=shared, frequency=frequency))
        shading = ", components shaded by their frequency across the run's resamples" if frequency else ""
        figures.append(f"<figure>{svg}<figcaption>{escape(labels[c.id])} ({c.id}){shading}</figcaption></figure>")
    if support:
        view = DiagramOptions(node_view=True, support=support, shared=shared)
        svg = circuit_svg(_union(group), view)
        figures.append(f"<figure>{svg}<figcaption>consensus: every component of these circuits, "
                       f"sized by how many hold it</figcaption></figure>")
    parts.append("<h3>Diagrams</h3>" + KEY + "<div class=\"figures\">" + "".join(figures) + "</div>")
    return "".join(parts)


def _union(group: list[Circuit]) -> Circuit:
    """A node circuit holding every component of ``group`` (drawn in the consensus view)."""
    first = group[0]
    names = sorted({n for c in group for n in c.node_names} - {"input", "logits"},
                   key=first.graph.node_names.index)
    provenance = replace(first.provenance, task="consensus", method=f"{len(group)} circuits", params={})
    return Circuit.of(provenance, first.shape, names)


def _consensus_table(support: dict[str, int], n: int) -> str:
    rows = "".join(f"<tr><td>{escape(name)}</td><td>{k} / {n}</td><td><span class=\"bar\" "
                   f"style=\"width:{80 * k / n:.0f}px\"></span></td></tr>" for name, k in support.items())
    return (f"<h3>Consensus</h3><p>Components by how many of the {n} circuits hold them.</p>"
            f"<table class=\"consensus\"><tr><th>component</th><th>support</th><th></th></tr>{rows}</table>")


def _function_section(circuits: list[Circuit], evaluations: Sequence[EvaluationRecord],
                      labels: dict[str, str]) -> str:
    views = transfer_views(evaluations, labels, {c.id: c.provenance.task for c in circuits})
    if not views:
        return ""
    return ("<h2>Function: the transfer matrix</h2><p>Each circuit (and each stored expression over them) evaluated "
            "on each task: kept alone (its faithfulness there) and knocked out of the full model (the share of the "
            "behaviour left). Outlined: the task the circuit was found for.</p><div class=\"figures\">"
            + "".join(transfer_svg(v) for v in views) + "</div>")


def _curves_section(circuits: list[Circuit], labels: dict[str, str]) -> str:
    curves = [curve for c in circuits for curve in stored_curves(c)]
    if not curves:
        return ""
    return ("<h2>Faithfulness curves</h2><p>Faithfulness of the top edges by score (solid: by |score|; dashed: "
            "by signed score), on a log scale of the share of edges kept.</p>" + curves_svg(curves, labels))


def _ablation_section(circuits: list[Circuit], labels: dict[str, str]) -> str:
    rows = []
    for c in circuits:
        level = c.provenance.params.get("level")
        if c.provenance.method == "ablation" and level is not None:
            faith = "" if c.provenance.faithfulness is None else f"{c.provenance.faithfulness:.3f}"
            rows.append(f"<tr><td>{escape(labels[c.id])}</td><td>{escape(str(level))}</td>"
                        f"<td>{c.n_nodes}</td><td>{faith}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Ablation levels</h2><table class=\"levels\"><tr><th>circuit</th><th>target level</th>"
            "<th>nodes</th><th>faithfulness</th></tr>" + "".join(rows) + "</table>")
