"""The hostile clients of the hardening review, reproduced against a live ``circat serve`` on each store.

Huge unauthenticated bodies, oversized job specs, model paths that probe the server's disk, writes with only a
read key set, annotations that would break pages, concurrent heavy reports and work that outlives its answer,
silent sockets: each answered at once, changing nothing, with the server responsive and its memory flat.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.catalogue import circuit
from circat.service.catalogue import Catalogue
from circat.service.graph import graph_for
from circat.service.stores import open_store
from tests.conftest import neo4j_uri, wipe_neo4j
from tests.helpers import GPT2, edge_circuit
from tests.live_server import busy_after, cpu_seconds, live_server, poll_health, send_body
from tests.test_api import PROBLEM, body

BACKENDS = ["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)]
SPEC = {"model": "toy", "task": "ioi", "method": "eap", "n": 8}
TOY = Path(__file__).parents[1] / "workers" / "toy" / "model"


def store_url(backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'live.db'}"
    url = neo4j_uri()
    wipe_neo4j(url)
    return url


def tiny_objects(megabytes: int) -> bytes:
    """``[{},{},...]`` of about ``megabytes`` MB: the body that once took 6.5 GB to refuse."""
    return b"[" + b"{}," * (megabytes * 1_000_000 // 3 - 1) + b"{}]"


def refused_without_touching(server, path: str, body: bytes) -> None:
    """An unauthenticated body: 401 within 1 s, /health within 1 s throughout, memory growth under 100 MB."""
    idle = server.rss_mb()
    stop, worst = threading.Event(), [0.0]
    poller = threading.Thread(target=poll_health, args=(server, stop, worst))
    poller.start()
    try:
        status, took = send_body(server, path, body)
        time.sleep(1.0)  # the rest of the upload is discarded meanwhile
    finally:
        stop.set()
        poller.join()
    assert status.startswith("HTTP/1.1 401") and took < 1.0, (path, status, took)
    assert worst[0] < 1.0, f"/health took {worst[0]:.2f} s while {path} was refused"
    assert server.rss_mb() - idle < 100, (path, idle, server.rss_mb())


@pytest.mark.parametrize("backend", BACKENDS)
def test_unauthenticated_bodies_cost_the_server_nothing(tmp_path, backend):
    url = store_url(backend, tmp_path)
    with live_server(url, tmp_path / "write-key.log", CIRCAT_API_KEY="w") as server:
        refused_without_touching(server, "/circuits", tiny_objects(255))
    with live_server(url, tmp_path / "read-key.log", CIRCAT_READ_KEY="r") as server:
        for path in ("/circuits:batch", "/jobs"):
            refused_without_touching(server, path, tiny_objects(60))
        assert httpx.get(f"{server.url}/circuits", headers=server.read_headers()).json()["total"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_authenticated_bodies_are_bounded_and_parsed_off_the_event_loop(tmp_path, backend):
    headers = {"Authorization": "Bearer w", "content-type": "application/json"}
    with live_server(store_url(backend, tmp_path), tmp_path / "serve.log", CIRCAT_API_KEY="w") as server:
        idle = server.rss_mb()
        r = httpx.post(f"{server.url}/circuits", content=tiny_objects(60), headers=headers, timeout=30)
        assert r.status_code == 413 and r.json()["limit"] == "CIRCAT_MAX_JSON_VALUES", r.text
        assert server.rss_mb() - idle < 200
        big = json.dumps({"circuits": [body(edge_circuit(seed=s)) for s in range(2)],
                          "padding": "x" * 30_000_000}).encode()
        stop, worst = threading.Event(), [0.0]
        poller = threading.Thread(target=poll_health, args=(server, stop, worst))
        poller.start()
        try:
            r = httpx.post(f"{server.url}/circuits:batch", content=big, headers=headers, timeout=60)
        finally:
            stop.set()
            poller.join()
        assert r.status_code == 201 and r.json()["stored"] == 2, r.text
        assert worst[0] < 1.0
        malformed = httpx.post(f"{server.url}/circuits", content=b'{"model": ', headers=headers)
        assert malformed.status_code == 400 and "not JSON" in malformed.json()["detail"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_oversized_job_specs_are_refused_at_once_and_listings_summarise(tmp_path, backend):
    line = {"prompt": "Van done in 1. Hat done in", "answer": " 2", "corrupted_prompt": "Van done in 7. Hat done in",
            "wrong_answer": " 1"}
    env = {"CIRCAT_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}"}
    with live_server(store_url(backend, tmp_path), tmp_path / "serve.log", **env) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        huge = json.dumps(SPEC | {"task": "mine", "task_lines": [line] * 1_500_000}).encode()
        t = time.perf_counter()
        r = c.post("/jobs", content=huge, headers={"content-type": "application/json"})
        # refused on its Content-Length, never read: seconds, not the minutes of parsing 180 MB (5 s: a loaded CI)
        assert r.status_code == 413 and r.json()["limit"] == "CIRCAT_MAX_SPEC_BYTES" and time.perf_counter() - t < 5
        many = SPEC | {"task": "mine", "task_lines": [line | {"prompt": "x" * 4000}] * 1100}
        r = c.post("/jobs", json=many)
        assert r.status_code == 422 and r.json()["limit"] == "CIRCAT_MAX_TASK_BYTES" and "task_lines" in r.text
        for field, value in (("top_n", 10**40), ("n", 10**9), ("levels", [0.5] * 33), ("ig_steps", 10**6)):
            r = c.post("/jobs", json=SPEC | {field: value})
            assert r.status_code == 422 and field in r.json()["detail"], (field, r.text)
        assert c.get("/jobs").json()["total"] == 0
        custom = c.post("/jobs", json=SPEC | {"task": "mine", "task_lines": [line] * 500})
        assert custom.status_code == 202 and "task_lines" not in custom.json()["spec"]
        listed = c.get("/jobs")
        summary = listed.json()["items"][0]["spec"]["custom_task"]
        assert summary["lines"] == 500 and len(summary["sha256"]) == 64 and len(listed.content) < 4000
        whole = c.get(f"/jobs/{custom.json()['id']}").json()["spec"]
        assert len(whole["task_lines"]) == 500


@pytest.mark.parametrize("backend", BACKENDS)
def test_rest_never_chooses_files_on_the_server(tmp_path, backend):
    roots = tmp_path / "models"
    allowed = roots / "toy-copy"
    shutil.copytree(TOY, allowed)
    outside = tmp_path / "elsewhere"
    shutil.copytree(TOY, outside)
    (roots / "escape").symlink_to(outside)
    env = {"CIRCAT_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}", "CIRCAT_MODEL_ROOTS": str(roots)}
    probes = ["/etc", "~/.ssh", "~", "../../../etc", "./workers/toy/model", str(outside), str(TOY),
              str(roots / "escape"), str(roots), f"{roots}/../elsewhere", "/nonexistent/dir", "C:\\models", "gpt2",
              "org/../etc"]
    with live_server(store_url(backend, tmp_path), tmp_path / "serve.log", **env) as server, \
            httpx.Client(base_url=server.url) as c:
        answers = [c.post("/jobs", json=SPEC | {"model": probe}) for probe in probes]
        assert {r.status_code for r in answers} == {422}
        assert len({r.json()["detail"] for r in answers}) == 1, [r.json()["detail"] for r in answers]
        assert c.get("/jobs").json()["total"] == 0
        assert c.post("/jobs", json=SPEC | {"model": str(allowed)}).status_code == 202
    with live_server(store_url(backend, tmp_path), tmp_path / "hub.log", CIRCAT_HUB_MODELS="1",
                     CIRCAT_MODEL_ROOTS="", CIRCAT_DATABASE_URL=f"sqlite:///{tmp_path / 'jobs2.db'}") as server:
        assert httpx.post(f"{server.url}/jobs", json=SPEC | {"model": "openai-community/gpt2"}).status_code == 202
        assert httpx.post(f"{server.url}/jobs", json=SPEC | {"model": str(allowed)}).status_code == 422


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_key_alone_keeps_writes_closed(tmp_path, backend):
    url = store_url(backend, tmp_path)
    with open_store(url) as store:
        cid = Catalogue(store).add(edge_circuit())
    env = {"CIRCAT_READ_KEY": "r", "CIRCAT_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}"}
    with live_server(url, tmp_path / "serve.log", **env) as server, httpx.Client(base_url=server.url) as c:
        assert c.delete(f"/circuits/{cid}").status_code == 401
        assert c.post("/circuits", json=body(edge_circuit(seed=3))).status_code == 401
        assert c.post("/jobs", json=SPEC).status_code == 401
        keyed = {"Authorization": "Bearer r"}
        assert c.get("/circuits", headers=keyed).json()["total"] == 1
        assert c.get(f"/circuits/{cid}", headers=keyed).status_code == 200
        assert c.post("/circuits", json=body(edge_circuit(seed=3)), headers=keyed).status_code == 201


@pytest.mark.parametrize("backend", BACKENDS)
def test_annotations_that_would_break_pages_are_refused_and_old_ones_are_skipped(tmp_path, backend):
    url = store_url(backend, tmp_path)
    good, old = edge_circuit(seed=1), edge_circuit(seed=2)
    with open_store(url) as store:
        Catalogue(store).add(good)
        broken = type(old)(**{**old.__dict__, "annotations": {"evaluation": ["not", "an", "object"]}})
        store.put(broken)  # as stored before annotations were checked: the store itself does not validate
    bad = [{"evaluation": []}, {"evaluation": "x"}, {"evaluation": {"curve_signed": {"percents": ["a"],
                                                                                     "faithfulness": [1]}}},
           {"evaluation": {"curve_absolute": {"percents": [1, 2], "faithfulness": [0.5]}}},
           {"paths": {"positive": [{"edges": "a->b", "contribution": 1}]}}]
    with live_server(url, tmp_path / "serve.log") as server, httpx.Client(base_url=server.url, timeout=60) as c:
        for annotations in bad:
            r = c.post("/circuits", json=body(edge_circuit(seed=5)) | {"annotations": annotations})
            assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
            assert any(e.startswith("annotations.") for e in r.json()["errors"]), r.json()
        assert c.get("/circuits").json()["total"] == 2
        for params in ({}, {"model": good.provenance.model}, {"ids": [good.id, broken.id]}):
            page = c.get("/report", params=params)
            assert page.status_code == 200, page.text[:500]
            assert broken.id in page.text and "do not fit their" in page.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_heavy_reports_are_bounded_and_stop_when_answered(tmp_path, backend):
    url = store_url(backend, tmp_path)
    rng = np.random.default_rng(0)
    with open_store(url) as store:
        ids = Catalogue(store).add_many([circuit(rng, graph_for(GPT2).n_edges, i) for i in range(10)])
    query = [("ids", i) for i in ids] + [("top_edges", "5000")]
    with live_server(url, tmp_path / "serve.log", CIRCAT_MAX_HEAVY="2") as server:
        t = time.perf_counter()
        assert httpx.get(f"{server.url}/report", params=query, timeout=120).status_code == 200
        alone = time.perf_counter() - t

        def ask(_: int) -> tuple[int, float, str | None]:
            t = time.perf_counter()
            r = httpx.get(f"{server.url}/report", params=query, timeout=120)
            return r.status_code, time.perf_counter() - t, r.headers.get("retry-after")

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(ask, range(12)))
        assert {s for s, _, _ in answers} <= {200, 503}
        busy = [a for a in answers if a[0] == 503]
        assert len(busy) >= 8 and all(took < 1.0 and retry for _, took, retry in busy), answers
        assert busy_after(server.pid) < 3.0
        t = time.perf_counter()
        assert httpx.get(f"{server.url}/report", params=query, timeout=120).status_code == 200
        assert time.perf_counter() - t < 2 * alone + 1
    with live_server(url, tmp_path / "timeout.log", CIRCAT_REQUEST_TIMEOUT_S="0.3") as server:
        r = httpx.get(f"{server.url}/report", params=query, timeout=60)
        assert r.status_code == 503 and r.json()["limit"] == "CIRCAT_REQUEST_TIMEOUT_S"
        before = cpu_seconds(server.pid)
        time.sleep(alone)
        assert cpu_seconds(server.pid) - before < 0.5 * alone, "the timed-out report ran on"


def test_silent_sockets_are_closed_and_connections_bounded(tmp_path):
    env = {"CIRCAT_HEADER_TIMEOUT_S": "1", "CIRCAT_MAX_CONNECTIONS": "20"}
    with live_server(f"sqlite:///{tmp_path / 'live.db'}", tmp_path / "serve.log", **env) as server:
        silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]
        dripping = socket.create_connection(("127.0.0.1", server.port))
        for part in (b"GET /health HTTP/1.1\r\n", b"Host: x\r\n"):
            dripping.sendall(part)
            time.sleep(0.6)
        assert httpx.get(f"{server.url}/health", timeout=5).status_code in (200, 503)
        time.sleep(1.0)
        for s in [*silent, dripping]:
            s.settimeout(2)
            assert s.recv(1) == b"", "the server kept a silent connection open"
            s.close()
        assert server.health_seconds() < 1.0
