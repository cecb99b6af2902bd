"""Hostile and careless input: bounded work, clear problem+json, nothing partial stored, keys enforced."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from circat.service.api.app import create_app
from circat.service.limits import Limits
from circat.service.stores.neo4j import Neo4jStore
from tests.conftest import neo4j_uri
from tests.helpers import GPT2, SMALL, edge_circuit, mib_file
from tests.live_server import live_server
from tests.test_api import PROBLEM, body, settings

REPRODUCTION = {"format": "circat.circuit/1", "model": "bigmodel", "task": "t", "method": "m",
                "nodes": {"a0.h0": {}}, "shape": {"n_layers": 100000, "n_heads": 1000, "parallel_attn_mlp": False}}
CYPHER = "x'}) MATCH (n) DETACH DELETE n //"
UNKNOWN = "c0123456789abcdef0123456"


@pytest.fixture
def client(store) -> TestClient:
    return TestClient(create_app(store, settings()))


def refused(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    return r.json()


def raw(client: TestClient, data: bytes):
    return client.post("/circuits", content=data, headers={"content-type": "application/json"})


def test_the_reproduction_is_refused_at_once_naming_the_limit(client):
    t = time.perf_counter()
    problem = refused(client.post("/circuits", json=REPRODUCTION), 422)
    assert time.perf_counter() - t < 1
    assert problem["limit"] == "CIRCAT_MAX_LAYERS" and problem["value"] == 100000 and problem["maximum"] == 128
    assert client.get("/circuits").json()["total"] == 0


@pytest.mark.parametrize(("shape", "limit"), [
    ({"n_layers": 12, "n_heads": 129}, "CIRCAT_MAX_HEADS"),
    ({"n_layers": 100_000_000, "n_heads": 1}, "CIRCAT_MAX_LAYERS"),
    ({"n_layers": 128, "n_heads": 128}, "CIRCAT_MAX_EDGES"),
])
def test_shapes_over_any_limit_are_refused_before_building(client, shape, limit):
    doc = REPRODUCTION | {"shape": shape}
    assert refused(client.post("/circuits", json=doc), 422)["limit"] == limit
    mib = mib_file(SMALL) | {"cfg": shape}
    r = client.post("/circuits/mib", params={"model": "big", "task": "t", "method": "m"}, json=mib)
    assert refused(r, 422)["limit"] == limit


def test_shapes_past_int32_fail_the_schema_itself(client):
    doc = REPRODUCTION | {"shape": {"n_layers": 68719476736, "n_heads": 1}}
    assert "body.shape.n_layers" in refused(client.post("/circuits", json=doc), 422)["detail"]


def test_the_defaults_admit_the_largest_real_models(client):
    for shape in ({"n_layers": 32, "n_heads": 32}, {"n_layers": 128, "n_heads": 4}, {"n_layers": 2, "n_heads": 128}):
        r = client.post("/circuits", json=REPRODUCTION | {"model": f"m{shape['n_layers']}", "shape": shape})
        assert r.status_code == 201, r.text


def test_configured_limits_bound_items_ids_and_pages(store):
    small = Limits(max_items=10, max_ids=2, max_page=5, max_layers=3)
    client = TestClient(create_app(store, settings(limits=small)))
    problem = refused(client.post("/circuits", json=body(edge_circuit())), 413)
    assert problem["limit"] == "CIRCAT_MAX_ITEMS" and problem["maximum"] == 10
    refused(client.get("/circuits", params={"limit": 6}), 422)
    assert "query.ids" in refused(client.get("/matrix", params={"ids": ["a", "b", "c"]}), 422)["detail"]
    assert refused(client.post("/circuits", json=REPRODUCTION | {"shape": {"n_layers": 4, "n_heads": 1}}),
                   422)["limit"] == "CIRCAT_MAX_LAYERS"
    assert client.get("/circuits").json()["total"] == 0


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CIRCAT_MAX_LAYERS", "256")
    monkeypatch.setenv("CIRCAT_REQUEST_TIMEOUT_S", "2.5")
    assert Limits.from_env() == Limits(max_layers=256, request_timeout_s=2.5)
    monkeypatch.setenv("CIRCAT_MAX_EDGES", "lots")
    with pytest.raises(ValueError, match="CIRCAT_MAX_EDGES"):
        Limits.from_env()


def test_deeply_nested_invalid_utf8_and_non_finite_bodies(client):
    assert "nested too deeply" in refused(raw(client, b'{"a":' * 100_000 + b"1" + b"}" * 100_000), 400)["detail"]
    assert "UTF-8" in refused(raw(client, b'{"model": "\xff\xfe"}'), 400)["detail"]
    nested = {"x": 1}
    for _ in range(80):
        nested = {"x": nested}
    assert "64 levels" in json.dumps(refused(client.post("/circuits", json=body(edge_circuit()) | {"params": nested}),
                                             422))
    doc = json.dumps(body(edge_circuit())).encode()
    for bad in (b'{"x": NaN}', b'{"x": [1, Infinity]}', b'{"x": -Infinity}'):
        problem = refused(raw(client, doc[:-1] + b', "annotations": ' + bad + b"}"), 422)
        assert "non-finite" in json.dumps(problem)
    scored = body(edge_circuit())
    scored["edges"][next(iter(scored["edges"]))] = {"in_graph": True, "score": "NAN_HERE"}
    text = json.dumps(scored).replace('"NAN_HERE"', "NaN")
    assert "non-finite score" in json.dumps(refused(raw(client, text.encode()), 422))
    assert client.get("/circuits").json()["total"] == 0


def test_lone_surrogates_in_names_and_fields_are_refused(client):
    doc = json.dumps(body(edge_circuit()) | {"task": "PLACEHOLDER"}).encode()
    for field in (b'"t\\ud800x"', b'"\\udfff"'):
        refused(raw(client, doc.replace(b'"PLACEHOLDER"', field)), 422)
    named = json.dumps(body(edge_circuit())).replace('"a0.h0"', '"a0.h0\\ud800"', 1).encode()
    assert "a0.h0\\ud800" in refused(raw(client, named), 422)["errors"][0]
    assert refused(client.get("/circuits/c%ED%A0%80"), 404)  # a surrogate as (invalid) UTF-8 bytes
    assert client.get("/circuits").json()["total"] == 0


def test_cypher_looking_strings_are_plain_strings(client, store):
    doc = body(edge_circuit()) | {"model": "m" + CYPHER, "task": CYPHER, "method": CYPHER, "task_family": CYPHER,
                                  "metric": CYPHER, "citation": CYPHER, "params": {CYPHER: CYPHER},
                                  "annotations": {"note": CYPHER}}
    before = _graph_size(store)
    cid = client.post("/circuits", json=doc).json()["id"]
    got = client.get(f"/circuits/{cid}").json()
    assert all(got[k] == doc[k] for k in ("model", "task", "method", "task_family", "metric", "citation", "params"))
    assert client.get("/circuits", params={"task": CYPHER}).json()["total"] == 1
    refused(client.get("/circuits/" + CYPHER), 404)
    refused(client.get(f"/components/{CYPHER}/a0.h0/circuits"), 404)
    refused(client.post("/circuits", json=doc | {"task": "other", "nodes": {CYPHER: {}}}), 422)
    refused(client.get("/overlap", params={"a": cid, "b": CYPHER}), 404)
    assert client.get("/circuits").json()["total"] == 1
    if before is not None:
        assert _graph_size(store) > before  # the circuit was added; nothing was deleted


def _graph_size(store) -> int | None:
    if not isinstance(store, Neo4jStore):
        return None
    return store.driver.execute_query("MATCH (n) RETURN count(n) AS n").records[0]["n"]


@pytest.mark.parametrize("params", [
    {"limit": -1}, {"limit": 10**30}, {"offset": -5}, {"offset": 10**30}, {"limit": "x"},
    {"min_faithfulness": "nan"}, {"min_faithfulness": "inf"}, {"model": "m" * 300},
])
def test_bad_paging_and_filters_are_named(client, params):
    problem = refused(client.get("/circuits", params=params), 422)
    assert f"query.{next(iter(params))}" in problem["detail"]


def test_duplicated_query_parameters_are_refused(client):
    assert "'limit' (2 times)" in refused(client.get("/circuits?limit=1&limit=2"), 422)["detail"]
    assert "'a'" in refused(client.get("/overlap?a=x&a=y&b=z"), 422)["detail"]
    ids = client.get("/matrix?ids=x&ids=y")
    assert ids.status_code == 404  # ids is a list: repeating it is how it is given


def test_unsupported_methods_answer_405_with_a_truthful_allow(client):
    r = client.request("PATCH", "/circuits")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST"
    assert client.request("PUT", f"/circuits/{UNKNOWN}").headers["allow"] == "DELETE, GET, HEAD"
    assert client.get("/circuits/mib").headers["allow"] == "POST"
    assert refused(client.request("POST", "/health"), 405)["detail"] == "POST is not served here"


def test_a_chunked_body_over_the_limit_is_cut_off(store):
    client = TestClient(create_app(store, settings(limits=Limits(max_body_bytes=1000))))

    def chunks():
        for _ in range(100):
            yield b" " * 100

    problem = refused(client.post("/circuits", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert problem["limit"] == "CIRCAT_MAX_BODY_BYTES"
    assert refused(client.post("/circuits", content=b" " * 1001), 413)["value"] == 1001


def test_a_request_past_the_timeout_answers_503(store):
    client = TestClient(create_app(store, settings(limits=Limits(request_timeout_s=0.01))))
    r = client.post("/circuits/mib", params={"model": "gpt2", "task": "ioi", "method": "eap"}, json=mib_file(GPT2))
    assert refused(r, 503)["limit"] == "CIRCAT_REQUEST_TIMEOUT_S"


WRITES = [("POST", "/circuits"), ("POST", "/circuits/mib?model=tiny&task=t&method=m"),
          ("DELETE", f"/circuits/{UNKNOWN}"), ("POST", "/jobs"), ("DELETE", "/jobs/j0123456789abcdef01234567")]
BAD_AUTH = [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cret"}, {"Authorization": "Basic s3cret"},
            {"Authorization": "Token s3cret"}, {"Authorization": "s3cret"}, {"Authorization": "Bearer"},
            {"Authorization": "Bearer s3cret2"}, {"Authorization": "Bearer \u00e9".encode("latin-1")}]


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_every_write_needs_the_key(store, method, path):
    client = TestClient(create_app(store, settings(key="s3cret")))
    payloads = {"/circuits/mib": mib_file(SMALL), "/jobs": {"model": "toy", "task": "ioi", "method": "eap"}}
    content = json.dumps(payloads.get(path.split("?")[0], body(edge_circuit())))
    for headers in BAD_AUTH:
        r = client.request(method, path, content=content, headers=headers | {"content-type": "application/json"})
        assert refused(r, 401) and r.headers["www-authenticate"] == "Bearer", headers
    assert client.get("/circuits").json()["total"] == 0 and client.get("/jobs").json()["total"] == 0
    ok = client.request(method, path, content=content,
                        headers={"Authorization": "bearer s3cret", "content-type": "application/json"})
    assert ok.status_code in (201, 202, 404)


def test_reads_need_a_key_only_when_a_read_key_is_set(store):
    open_reads = TestClient(create_app(store, settings(key="w")))
    assert open_reads.get("/circuits").status_code == 200
    private = TestClient(create_app(store, settings(key="w", read_key="r")))
    for path in ("/circuits", "/health", f"/circuits/{UNKNOWN}", "/overlap?a=x&b=y"):
        assert refused(private.get(path), 401)["detail"].startswith("reads need")
    assert private.get("/circuits", headers={"Authorization": "Bearer r"}).status_code == 200
    assert private.get("/circuits", headers={"Authorization": "Bearer w"}).status_code == 200
    spec = private.get("/openapi.json", headers={"Authorization": "Bearer r"}).json()
    assert "401" in spec["paths"]["/circuits"]["get"]["responses"]


def test_every_operation_declares_its_problems_in_openapi(client):
    spec = client.get("/openapi.json").json()
    assert "Problem" in spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            errors = {code: r for code, r in op["responses"].items() if code.startswith(("4", "5"))}
            assert {"503"} <= set(errors), (method, path)
            # HTML pages answer their own errors in HTML too
            page = "text/html" in op["responses"].get("200", {}).get("content", {})
            allowed = [[PROBLEM, "text/html"], [PROBLEM]] if page else [[PROBLEM]]
            assert all(list(r["content"]) in allowed for r in errors.values()), (method, path)
            if op.get("parameters") or op.get("requestBody"):
                assert "422" in errors, (method, path)
            if op.get("requestBody"):
                assert {"400", "401", "413"} <= set(errors), (method, path)


def test_cli_import_applies_the_same_limits(tmp_path, monkeypatch):
    from circat.service.cli.main import app

    runner = CliRunner()
    folder = tmp_path / "ioi_gpt2"
    folder.mkdir()
    (folder / "big.json").write_text(json.dumps(mib_file(SMALL) | {"cfg": {"n_layers": 100000, "n_heads": 1000}}))
    out = runner.invoke(app, ["import", str(folder / "big.json"), "--model", "big", "--task", "t", "--json"])
    assert out.exit_code == 1 and "CIRCAT_MAX_LAYERS" in out.stdout
    (folder / "ok.json").write_text(json.dumps(mib_file(GPT2)))
    monkeypatch.setenv("CIRCAT_MAX_BODY_BYTES", "1000")
    out = runner.invoke(app, ["import", str(folder), "--json"])
    results = json.loads(out.stdout)
    assert out.exit_code == 1 and all("CIRCAT_MAX_BODY_BYTES" in r["error"] for r in results)
    (folder / "deep.json").write_text("[" * 100_000)
    monkeypatch.delenv("CIRCAT_MAX_BODY_BYTES")
    out = runner.invoke(app, ["import", str(folder / "deep.json"), "--model", "m", "--task", "t", "--json"])
    assert out.exit_code == 1 and "RecursionError" in out.stdout
    assert json.loads(runner.invoke(app, ["list", "--json"]).stdout)["total"] == 0


def _hostile_round(url: str) -> None:
    """Every hostile input once against a live server; each must be refused with problem+json."""
    with httpx.Client(base_url=url, timeout=30) as c:
        for resp, status in [
            (c.post("/circuits", json=REPRODUCTION), 422),
            (c.post("/circuits", content=b"[" * 200_000, headers={"content-type": "application/json"}), 400),
            (c.post("/circuits", content=b'{"x": NaN}', headers={"content-type": "application/json"}), 422),
            (c.post("/circuits", content=b'{"model":"\xff"}', headers={"content-type": "application/json"}), 400),
            (c.get("/circuits", params={"limit": -1}), 422),
            (c.get("/circuits?offset=1&offset=2"), 422),
            (c.get("/circuits/" + quote(CYPHER, safe="")), 404),
            (c.get("/circuits/"), 404),
        ]:
            assert resp.status_code == status and resp.headers["content-type"] == PROBLEM, resp.text


def _huge_declared_body(port: int, declared: int) -> bytes:
    """Declare a ``declared``-byte body, send 1 MB of it, and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST /circuits HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {declared}\r\n\r\n".encode())
        with contextlib.suppress(OSError):  # the server may close before reading what we send
            s.sendall(b" " * 1_000_000)
        answer = b""
        while b"}" not in answer.partition(b"\r\n\r\n")[2]:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def test_a_live_server_survives_hostile_input_with_flat_memory(tmp_path, backend):
    url = f"sqlite:///{tmp_path / 'live.db'}" if backend == "sqlite" else neo4j_uri()
    with live_server(url, tmp_path / "serve.log") as server:
        _hostile_round(server.url)  # warm: first imports, first graph
        idle = server.rss_mb()
        answer = _huge_declared_body(server.port, 300 * 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 413") and b"CIRCAT_MAX_BODY_BYTES" in answer
        for _ in range(5):
            _hostile_round(server.url)
        assert server.health_seconds() < 1.0
        assert server.rss_mb() - idle < 50, (idle, server.rss_mb())
        assert httpx.get(f"{server.url}/circuits").json()["total"] == 0
