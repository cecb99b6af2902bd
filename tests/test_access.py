"""HTTP semantics and access details: HEAD, security headers, offline docs behind the read key, keys as configured,
malformed JSON, bounded pages, and batch results that tell new circuits from stored ones."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi.testclient import TestClient

from circat.service.api.app import create_app
from circat.service.config import Settings
from circat.service.limits import Limits
from tests.helpers import edge_circuit
from tests.live_server import live_server
from tests.test_api import PROBLEM, body, load_literature, settings
from tests.test_report import headless

GETS = ["/health", "/circuits", "/openapi.json", "/docs", "/redoc", "/docs/assets/swagger-ui.css", "/"]


@pytest.fixture
def client(store) -> TestClient:
    return TestClient(create_app(store, settings()))


def test_head_answers_wherever_get_does_with_its_headers_and_no_body(client):
    cid = load_literature(client)["ioi"]
    for path in [*GETS, f"/circuits/{cid}", f"/circuits/{cid}/diagram.svg", f"/report?ids={cid}"]:
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"], path
        assert head.headers.get("content-length") == got.headers.get("content-length"), path
    assert client.head("/circuits/c" + "0" * 23).status_code == 404


def test_head_needs_the_read_key_like_get(store):
    private = TestClient(create_app(store, settings(read_key="r")))
    for path in GETS:
        assert private.head(path).status_code == 401, path
        assert private.head(path, headers={"Authorization": "Bearer r"}).status_code == 200, path


def test_every_answer_says_nosniff_and_pages_have_a_restrictive_policy(client):
    cid = load_literature(client)["ioi"]
    for path in ["/circuits", f"/circuits/{cid}/diagram.svg", f"/report?ids={cid}", "/", "/docs", "/nope"]:
        assert client.get(path).headers["x-content-type-options"] == "nosniff", path
    for path in [f"/circuits/{cid}/diagram.svg", f"/report?ids={cid}", "/"]:
        policy = client.get(path).headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy and "frame-ancestors 'none'" in policy
    docs = client.get("/docs").headers["content-security-policy"]
    assert "script-src 'self'" in docs and "unsafe-inline" not in docs.split("script-src")[1].split(";")[0]
    assert "content-security-policy" not in client.get("/circuits").headers


def test_docs_load_nothing_from_other_hosts_and_their_assets_are_served(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert not re.search(r"(src|href)=\"(https?:)?//", html), html
        assert "<script>" not in html  # no inline script: the policy forbids it
        for asset in re.findall(r"(?:src|href)=\"(/docs/assets/[^\"]+)\"", html):
            r = client.get(asset)
            assert r.status_code == 200 and len(r.content) > 100, asset
    assert client.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/docs/assets/../../etc/passwd").status_code == 404
    assert client.get("/docs/assets/secret.js").status_code == 404


def test_docs_follow_the_read_key_unless_declared_public(store):
    private = TestClient(create_app(store, settings(read_key="r")))
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui.css"):
        assert private.get(path).status_code == 401, path
    public = TestClient(create_app(store, Settings(**{**settings(read_key="r").__dict__, "public_docs": True})))
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui.css"):
        assert public.get(path).status_code == 200, path
    assert public.get("/circuits").status_code == 401


def test_swagger_ui_renders_offline_under_its_policy_in_headless_chromium(tmp_path):
    with live_server(f"sqlite:///{tmp_path / 'cat.db'}", tmp_path / "serve.log") as server:
        dom = headless(f"{server.url}/docs", "--virtual-time-budget=10000", "--disable-background-networking",
                       "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "opblock" in dom.stdout and "/circuits/{circuit_id}" in dom.stdout, dom.stdout[-2000:]


def test_openapi_declares_the_bearer_scheme_when_a_key_is_set(store):
    spec = TestClient(create_app(store, settings(key="w"))).get("/openapi.json").json()
    assert spec["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert spec["paths"]["/circuits"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/circuits"]["get"]
    open_spec = TestClient(create_app(store, settings())).get("/openapi.json").json()
    assert "securitySchemes" not in open_spec["components"]


def test_keys_with_stray_whitespace_are_stripped_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("CIRCAT_API_KEY", "  s3cret\n")
    with caplog.at_level(logging.WARNING, logger="circat.config"):
        assert Settings.from_env().api_key == "s3cret"
    assert "CIRCAT_API_KEY has surrounding whitespace" in caplog.text
    monkeypatch.setenv("CIRCAT_READ_KEY", "two words")
    with pytest.raises(ValueError, match="CIRCAT_READ_KEY must be printable ASCII"):
        Settings.from_env()


def test_malformed_json_is_400_and_names_where(client):
    for raw in (b'{"model": ', b"{'model': 1}", b"[1, 2", b""):
        r = client.post("/circuits", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == (422 if raw == b"" else 400) and r.headers["content-type"] == PROBLEM, raw
    assert "line 1 column 11" in client.post("/circuits", content=b'{"model": ',
                                             headers={"content-type": "application/json"}).json()["detail"]


def test_report_and_diagram_pages_are_bounded(store):
    client = TestClient(create_app(store, settings(limits=Limits(max_top_edges=50, max_report_circuits=2))))
    ids = list(load_literature(client).values())
    assert client.get(f"/circuits/{ids[0]}/diagram.svg", params={"top_edges": 51}).status_code == 422
    assert client.get("/report", params={"ids": ids[:3]}).status_code == 422
    assert client.get("/report", params={"limit": 3}).status_code == 422
    assert client.get("/report", params={"ids": ids[:2], "top_edges": 50}).status_code == 200


def test_batch_results_tell_new_circuits_from_stored_ones(client):
    a, b = body(edge_circuit(seed=1)), body(edge_circuit(seed=2))
    first = client.post("/circuits:batch", json={"circuits": [a, a, b]}).json()
    assert (first["stored"], first["existing"]) == (2, 1)
    assert [r["new"] for r in first["results"]] == [True, False, True]
    again = client.post("/circuits:batch", json={"circuits": [b]}).json()
    assert (again["stored"], again["existing"], again["results"][0]["new"]) == (0, 1, False)
