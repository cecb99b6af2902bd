"""Pictures of circuits: layout, diagram, heatmap, report, their CLI and API, and a real headless Chromium."""

from __future__ import annotations

import html as html_module
import json
import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from circat.service.api.app import create_app
from circat.service.circuit import Circuit, Provenance
from circat.service.effects import ComponentEffects, EffectsView
from circat.service.graph import graph_for
from circat.service.literature import literature_documents
from circat.service.report.diagram import NEGATIVE, OPPOSES, POSITIVE, SUPPORTS, DiagramOptions, circuit_svg
from circat.service.report.heatmap import cluster_order, heatmap_svg
from circat.service.report.layout import place
from circat.service.report.page import report_html
from circat.service.types import ModelShape
from tests.helpers import GPT2, SMALL, edge_circuit, node_circuit

SVG_NS = "{http://www.w3.org/2000/svg}"


def svg_nodes(svg: str) -> list[ElementTree.Element]:
    return [g for g in ElementTree.fromstring(svg).iter(f"{SVG_NS}g") if g.get("class") == "node"]


def test_layout_puts_layers_in_rows_from_input_up_to_logits():
    g = graph_for(ModelShape(n_layers=3, n_heads=4))
    at = place(g)
    y = dict(zip(g.node_names, at.y, strict=True))
    x = dict(zip(g.node_names, at.x, strict=True))
    assert y["input"] > y["a0.h0"] > y["a1.h0"] > y["a2.h0"] > y["logits"]  # SVG y grows downwards
    assert y["a1.h0"] == y["a1.h3"] == y["m1"]
    assert x["a1.h0"] < x["a1.h1"] < x["a1.h2"] < x["a1.h3"] < x["m1"]
    assert x["a0.h2"] == x["a2.h2"]


def test_diagram_draws_one_element_per_node_and_notes_hidden_edges():
    c = edge_circuit(keep=0.5)
    svg = circuit_svg(c, DiagramOptions(top_edges=40))
    nodes = svg_nodes(svg)
    assert sorted(n.get("data-name") for n in nodes) == sorted(c.node_names)
    edges = [e for e in ElementTree.fromstring(svg).iter(f"{SVG_NS}line") if e.get("class") == "edge"]
    assert len(edges) == 40
    assert f"40 of {c.n_edges} edges drawn ({c.n_edges - 40} hidden)" in caption(svg)
    drawn = {e.find(f"{SVG_NS}title").text.split(":")[0] for e in edges}
    top = np.argsort(-np.abs(np.where(c.edge_mask, c.edge_scores, 0)))[:40]
    assert drawn == {c.graph.edge_name(int(i)) for i in top}


def caption(svg: str) -> str:
    """The diagram's caption, its wrapped lines joined."""
    return " ".join(t.text for t in ElementTree.fromstring(svg).iter(f"{SVG_NS}text") if t.get("class") == "note")


def _lines(metric: str | None) -> tuple[dict[str, ElementTree.Element], str]:
    c = Circuit.of(Provenance(model="tiny", task="t", method="eap", metric=metric), SMALL, ["a0.h0", "a1.h1"],
                   {"a0.h0->a1.h1<k>": -2.0, "a0.h0->a1.h1<q>": 1.0, "input->a0.h0<v>": None})
    svg = circuit_svg(c)
    lines = ElementTree.fromstring(svg).iter(f"{SVG_NS}line")
    return {e.find(f"{SVG_NS}title").text.split(":")[0]: e for e in lines}, caption(svg)


@pytest.mark.parametrize(("metric", "supporting", "opposing"),
                         [("logit_diff", "<k>", "<q>"), ("prob_diff", "<k>", "<q>"), ("kl", "<q>", "<k>")])
def test_diagram_colours_edges_by_what_they_do_for_the_task(metric, supporting, opposing):
    # a negative score supports the answer under a difference metric (ablating the edge lowers it); under KL to
    # the full model a positive one does (ablating the edge raises it)
    lines, legend = _lines(metric)
    assert lines[f"a0.h0->a1.h1{supporting}"].get("stroke") == SUPPORTS
    assert lines[f"a0.h0->a1.h1{opposing}"].get("stroke") == OPPOSES
    assert "supports the answer" in lines[f"a0.h0->a1.h1{supporting}"].find(f"{SVG_NS}title").text
    assert lines["input->a0.h0<v>"].get("stroke") == "#8c8c8c"
    assert "Blue: supports the answer" in legend and ("raises KL" if metric == "kl" else f"lowers {metric}") in legend
    assert lines["a0.h0->a1.h1<k>"].get("stroke-dasharray") and not lines["a0.h0->a1.h1<q>"].get("stroke-dasharray")
    assert float(lines["a0.h0->a1.h1<k>"].get("stroke-width")) > float(lines["a0.h0->a1.h1<q>"].get("stroke-width"))


def test_diagram_of_an_unknown_metric_colours_by_sign_and_says_so():
    lines, legend = _lines(None)
    assert lines["a0.h0->a1.h1<q>"].get("stroke") == POSITIVE and lines["a0.h0->a1.h1<k>"].get("stroke") == NEGATIVE
    assert "the metric is unknown" in legend


def test_every_kept_component_is_named_and_shaded_by_its_score():
    c = Circuit.of(Provenance(model="tiny", task="t", method="ablation"), SMALL,
                   {"a0.h1": 0.5, "a2.h0": -2.0, "m1": 1.0})
    svg = circuit_svg(c)
    labels = {t.text for t in ElementTree.fromstring(svg).iter(f"{SVG_NS}text") if t.get("class") == "label"}
    assert labels == set(c.node_names)
    nodes = {n.get("data-name"): n for n in svg_nodes(svg)}
    assert float(nodes["a2.h0"].get("fill-opacity")) == pytest.approx(1.0)
    assert float(nodes["a0.h1"].get("fill-opacity")) < float(nodes["m1"].get("fill-opacity")) < 1.0


def test_shared_components_are_ringed_and_node_view_sizes_by_support():
    c = node_circuit(["a0.h1", "a1.h1", "m2"])
    svg = circuit_svg(c, DiagramOptions(node_view=True, shared=frozenset({"a1.h1"}), support={"a0.h1": 1, "a1.h1": 3}))
    nodes = {n.get("data-name"): n for n in svg_nodes(svg)}
    assert [name for name, n in nodes.items() if n.get("data-shared")] == ["a1.h1"]
    radius = {name: float(n.find(f"{SVG_NS}circle").get("r")) for name, n in nodes.items() if name.startswith("a")}
    assert radius["a1.h1"] > radius["a0.h1"]
    assert "edges drawn" not in svg


def test_cluster_order_keeps_families_together():
    # circuits 0, 2, 4 resemble each other, as do 1 and 3
    sim = np.array([[1, .1, .9, .1, .8], [.1, 1, .1, .9, .1], [.9, .1, 1, .1, .8], [.1, .9, .1, 1, .1],
                    [.8, .1, .8, .1, 1]])
    order = cluster_order(sim)
    assert sorted(order) == [0, 1, 2, 3, 4]
    position = {c: i for i, c in enumerate(order)}
    assert max(position[i] for i in (0, 2, 4)) - min(position[i] for i in (0, 2, 4)) == 2
    assert abs(position[1] - position[3]) == 1
    svg = heatmap_svg(list("abcde"), sim.tolist(), "node Jaccard")
    cells = [r for r in ElementTree.fromstring(svg).iter(f"{SVG_NS}rect") if r.get("class") == "cell"]
    assert len(cells) == 25 and "a vs c: 0.90" in svg


def literature_circuits() -> list[Circuit]:
    from circat.service.documents import circuit_from_document

    return [circuit_from_document(d) for d in literature_documents()]


def test_report_is_self_contained_and_shows_every_circuit():
    circuits = literature_circuits()
    html = report_html(circuits)
    assert not re.search(r"(src|href)=\"(https?:)?//", html) and "<script" not in html
    assert all(c.id in html for c in circuits)
    assert html.count('class="heatmap"') == 1  # literature circuits have nodes only: no edge heatmap
    shared = {m.group(1) for m in re.finditer(r'data-name="([^"]+)"[^>]*data-shared="1"', html)}
    held = [set(c.node_names) for c in circuits]
    assert shared == set.intersection(*held) - {"input", "logits"}


def test_report_draws_curves_of_discovered_circuits():
    curve = {"percents": [0.1, 1, 10, 100], "edges": [1, 5, 50, 500], "faithfulness": [0.1, 0.4, 0.8, 1.0],
             "cpr": 0.5, "cmd": 0.2}
    c = edge_circuit()
    c = Circuit(**{**c.__dict__, "annotations": {"evaluation": {"curve_absolute": curve, "curve_signed": curve}}})
    html = report_html([c, edge_circuit(seed=1)])
    assert html.count('class="curve"') == 2 and html.count('class="heatmap"') == 2


def test_report_ranks_component_effects_with_bars_scaled_to_the_largest():
    effects = ComponentEffects(base=0.8, removed={"a1.h0": 0.5, "m0": -0.1}, added={f"a0.h{i}": i / 100
                               for i in range(30)}, layer_heads={0: 0.3, 1: 0.9}, heads_upto={0: 0.3, 1: 0.95},
                               passes={"removed": 1})
    html = report_html([], effects=[EffectsView("c1 & heads(L1)", "tiny", "months", "logit_diff", effects)])
    drop, gain = re.findall(r'<table class="effects" data-group="(\w+)">(.*?)</table>', html, re.S)
    assert drop[0] == "drop" and drop[1].index("a1.h0") < drop[1].index("m0") and "width:120px" in drop[1]
    assert "width:24px" in drop[1]  # 0.1 of 0.5 of 120 px
    assert gain[1].count("<tr>") == 2 + 20 and "a0.h29" in gain[1] and "a0.h9<" not in gain[1]
    assert "c1 &amp; heads(L1)" in html and "<td>1</td><td>0.900</td><td>0.950</td>" in html
    assert "component importance" not in report_html([])


def test_cli_report_writes_html(tmp_path):
    from circat.workers.cli import app

    runner = CliRunner()
    for i, d in enumerate(literature_documents()):
        f = tmp_path / f"{i}.json"
        f.write_text(d.model_dump_json(exclude_none=True))
        out = runner.invoke(app, ["import", str(f), "--json"])
        assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["report", "--task", "ioi", "--out", str(tmp_path / "r.html"), "--json"])
    assert out.exit_code == 0, out.output
    assert "ioi / literature" in (tmp_path / "r.html").read_text()
    out = runner.invoke(app, ["report", "c" + "0" * 23, "--out", str(tmp_path / "x.html")])
    assert out.exit_code == 1 and "c" + "0" * 23 in out.output and not (tmp_path / "x.html").exists()


@pytest.fixture
def client(sqlite_store) -> TestClient:
    from tests.test_api import settings

    return TestClient(create_app(sqlite_store, settings()))


def test_api_serves_diagram_report_and_browse_page(client):
    from tests.test_api import load_literature

    ids = load_literature(client)
    r = client.get(f"/circuits/{ids['ioi']}/diagram.svg", params={"node_view": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert len(svg_nodes(r.text)) == len(client.get(f"/circuits/{ids['ioi']}").json()["nodes"])
    r = client.get("/report", params={"ids": [ids["ioi"], ids["months"]]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert ids["ioi"] in r.text and ids["months"] in r.text and ids["numerals"] not in r.text
    page = client.get("/", params={"family": "sequence-continuation"})
    assert page.status_code == 200 and ids["months"] in page.text and ids["ioi"] not in page.text
    missing = client.get("/report", params={"ids": ["c" + "0" * 23]})
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "c" + "0" * 23 in missing.text
    assert client.get("/circuits/c" + "0" * 23 + "/diagram.svg").status_code == 404


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no chromium: run the tests with scripts/test.sh (installs Debian's chromium)")
    return found


def headless(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def screenshot(tmp_path: Path, url: str, name: str) -> int:
    """Screenshot ``url`` at 1000 x 1400 and return the PNG's size (a blank page compresses to little)."""
    shot = tmp_path / f"{name}.png"
    done = headless(url, f"--screenshot={shot}", "--window-size=1000,1400")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return shot.stat().st_size


def test_report_renders_in_headless_chromium(tmp_path):
    circuits = literature_circuits()
    page = tmp_path / "report.html"
    html = report_html(circuits)
    page.write_text(html)
    dom = headless(page.as_uri(), "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    drawn = sum(int(c.node_mask.sum()) for c in circuits)
    assert html.count('<g class="node"') > drawn  # every circuit's nodes, then the consensus view
    assert dom.stdout.count('<g class="node"') == html.count('<g class="node"')
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    assert screenshot(tmp_path, page.as_uri(), "report") > 10 * screenshot(tmp_path, blank.as_uri(), "blank")


def test_browse_page_renders_from_a_live_server_in_headless_chromium(tmp_path):
    import httpx

    from tests.live_server import live_server

    with live_server(f"sqlite:///{tmp_path / 'cat.db'}", tmp_path / "server.log") as server:
        ids = []
        for d in literature_documents():
            r = httpx.post(f"{server.url}/circuits", json=d.model_dump(mode="json", exclude_none=True), timeout=30)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        dom = headless(f"{server.url}/", "--dump-dom")
        assert dom.returncode == 0 and all(f'value="{i}"' in dom.stdout for i in ids), dom.stderr[-2000:]
        report = headless(f"{server.url}/report?" + "&".join(f"ids={i}" for i in ids[:3]), "--dump-dom")
        assert report.returncode == 0 and report.stdout.count('class="circuit"') == 3 + 1  # and the consensus view
        blank = screenshot(tmp_path, f"{server.url}/report?ids=c{'0' * 23}", "error")
        assert screenshot(tmp_path, f"{server.url}/report?ids={ids[0]}&ids={ids[1]}", "served") > 5 * blank


def test_transfer_cells_show_their_bootstrap_interval_on_hover():
    from circat.service.report.transfer import transfer_svg, transfer_views
    from circat.service.stores.base import EvaluationRecord

    def record(task: str, low: float | None, high: float | None) -> EvaluationRecord:
        return EvaluationRecord(model="tiny", task=task, expression="c1", circuits=(), mode="keep", level="node",
                                metric="logit_diff", ablation="resample", per_position=False, n_prompts=16, seed=0,
                                value=0.8, metric_value=2.0, full_metric=3.0, empty_metric=0.5, low=low, high=high)

    (view,) = transfer_views([record("months", 0.7, 0.9), record("ioi", None, None)], {"c1": "A"}, {"c1": "months"})
    svg = transfer_svg(view)
    assert "A on months: 0.80 [0.70, 0.90]</title>" in svg and "A on ioi: 0.80</title>" in svg


MEASURE = """<script>
window.addEventListener("load", () => {
  const out = [];
  for (const svg of document.querySelectorAll("svg.circuit, svg.heatmap")) {
    const box = svg.getBoundingClientRect();
    for (const t of svg.querySelectorAll("text")) {
      const r = t.getBoundingClientRect();
      out.push([svg.getAttribute("class"), t.getAttribute("class") || "", t.textContent,
                r.left >= box.left - 0.5 && r.right <= box.right + 0.5 && r.top >= box.top - 0.5
                && r.bottom <= box.bottom + 0.5, r.height]);
    }
  }
  const pre = document.createElement("pre");
  pre.id = "measured";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def test_rendered_diagrams_name_every_kept_node_and_captions_and_labels_fit(tmp_path):
    gpt2 = edge_circuit(GPT2, keep=0.02, task="ioi", model="gpt2", score_all=True)
    small = Circuit.of(Provenance(model="tiny", task="a-task-with-a-long-name", method="eap", metric="logit_diff"),
                       SMALL, ["a0.h0", "a1.h1"], {"a0.h0->a1.h1<k>": -2.0, "a0.h0->a1.h1<q>": 1.0})
    labels = [f"task-{i} / method-{i % 4}" for i in range(30)]
    grid = [[1.0 if i == j else ((i * 7 + j * 3) % 10) / 10 for j in range(30)] for i in range(30)]
    page = tmp_path / "measure.html"
    page.write_text("<!DOCTYPE html><html><body>" + circuit_svg(gpt2) + circuit_svg(small)
                    + heatmap_svg(labels, grid, "node Jaccard") + MEASURE + "</body></html>")
    dom = headless(page.as_uri(), "--dump-dom", "--window-size=2000,3000")
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stdout[-2000:]
    texts = json.loads(html_module.unescape(found[1]))
    assert all(inside for *_, inside, _ in texts), [t for t in texts if not t[3]][:5]  # nothing cut off
    rendered = {text for kind, cls, text, *_ in texts if kind == "circuit" and cls == "label"}
    assert set(gpt2.node_names) | set(small.node_names) <= rendered  # every kept node's name is drawn
    notes = " ".join(text for kind, cls, text, *_ in texts if cls == "note")
    assert "a-task-with-a-long-name" in notes and "edges drawn" in notes and "Blue: supports the answer" in notes
    heat = [(cls, text, height) for kind, cls, text, _, height in texts
            if kind == "heatmap" and cls in ("row", "column")]
    assert {t for _, t, _ in heat} == set(labels) and all(h >= 11 for cls, _, h in heat if cls == "row")
