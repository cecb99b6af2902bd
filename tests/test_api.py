"""The REST API over the real stores: listing, import, overlap, auth, problem+json errors."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from circat.service.api.app import create_app
from circat.service.config import Settings
from circat.service.documents import document_from_circuit
from circat.service.limits import Limits
from circat.service.literature import literature_documents
from circat.service.stores.neo4j import Neo4jStore
from tests.helpers import SMALL, edge_circuit, mib_file

PROBLEM = "application/problem+json"


def settings(key: str | None = None, read_key: str | None = None, limits: Limits | None = None) -> Settings:
    """The test environment's settings (temporary job database) with these keys and limits."""
    return replace(Settings.from_env(), api_key=key, read_key=read_key, limits=limits or Limits())


@pytest.fixture
def client(store) -> TestClient:
    return TestClient(create_app(store, settings()))


def body(c) -> dict:
    return document_from_circuit(c).model_dump(mode="json", exclude_none=True, exclude={"id"})


def load_literature(client: TestClient) -> dict[str, str]:
    ids = {}
    for d in literature_documents():
        r = client.post("/circuits", json=d.model_dump(mode="json", exclude_none=True))
        assert r.status_code == 201, r.text
        ids[d.task] = r.json()["id"]
    return ids


def test_import_list_get(client):
    r = client.post("/circuits", json=body(edge_circuit()))
    assert r.status_code == 201 and r.headers["location"] == f"/circuits/{r.json()['id']}"
    cid = r.json()["id"]
    listing = client.get("/circuits", params={"model": "tiny", "min_faithfulness": 0.1}).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == cid
    assert client.get("/circuits", params={"method": "other"}).json()["total"] == 0
    got = client.get(f"/circuits/{cid}").json()
    assert got["id"] == cid and got["edges"]
    mib = client.get(f"/circuits/{cid}", params={"format": "mib"}).json()
    assert set(mib) == {"cfg", "nodes", "edges"} and mib["cfg"]["n_layers"] == SMALL.n_layers


def test_import_mib_file(client):
    r = client.post("/circuits/mib", params={"model": "tiny", "task": "ioi", "method": "eap-ig"},
                    json=mib_file(SMALL))
    assert r.status_code == 201, r.text
    assert client.get(f"/circuits/{r.json()['id']}", params={"format": "mib"}).json() == mib_file(SMALL)


def test_bad_circuit_is_refused_with_every_problem_and_nothing_stored(client):
    bad = body(edge_circuit())
    bad["edges"] = {"a2.h0->a0.h0<q>": {}, "input->a0.h0<q>": {"score": float("inf")}, "zz": {}}
    r = client.post("/circuits", content=json.dumps(bad), headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert len(r.json()["errors"]) == 3
    assert client.get("/circuits").json()["total"] == 0


def test_batch_import_stores_the_good_and_names_each_bad_one(client):
    good = [body(edge_circuit(seed=s)) for s in range(3)]
    unknown_edge = body(edge_circuit(seed=5)) | {"edges": {"zz": {}}}
    ok = client.post("/circuits:batch", json={"circuits": good})
    assert ok.status_code == 201 and (ok.json()["stored"], ok.json()["existing"]) == (3, 0)
    ids = [r["id"] for r in ok.json()["results"]]
    r = client.post("/circuits:batch", json={"circuits": [good[0], {"model": "tiny"}, unknown_edge, 7, good[1]]})
    assert r.status_code == 207 and (r.json()["stored"], r.json()["existing"], r.json()["refused"]) == (0, 2, 3)
    res = r.json()["results"]
    assert [x["index"] for x in res] == [0, 1, 2, 3, 4] and [res[0]["id"], res[4]["id"]] == ids[:2]
    assert not res[0]["new"] and not res[4]["new"]
    assert res[1]["problem"]["status"] == 422 and "task" in res[1]["problem"]["detail"]
    assert res[2]["problem"]["title"] == "Circuit refused" and "zz" in res[2]["problem"]["errors"][0]
    assert client.get("/circuits").json()["total"] == 3
    bare = client.post("/circuits:batch", json=[good[0]])
    assert bare.status_code == 422 and bare.headers["content-type"] == PROBLEM


def test_batch_import_is_bounded_and_needs_the_write_key(store):
    limits = replace(Limits(), max_batch=2)
    client = TestClient(create_app(store, settings(key="k", limits=limits)))
    docs = {"circuits": [body(edge_circuit(seed=s)) for s in range(3)]}
    assert client.post("/circuits:batch", json=docs).status_code == 401
    r = client.post("/circuits:batch", json=docs, headers={"Authorization": "Bearer k"})
    assert r.status_code == 422 and r.json()["limit"] == "CIRCAT_MAX_BATCH"
    assert client.get("/circuits").json()["total"] == 0


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    from pathlib import Path

    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_several_api_processes_share_one_store(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.live_server import live_server

    docs = [body(edge_circuit(seed=s)) for s in range(8)]
    with live_server(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "serve.log", workers=2,
                     CIRCAT_DATABASE_URL=f"sqlite:///{tmp_path / 'jobs.db'}") as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        assert len(children_of(server.pid)) >= 2
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda d: c.post("/circuits:batch", json={"circuits": [d]}).status_code, docs))
        assert statuses == [201] * 8
        assert c.get("/circuits").json()["total"] == 8


def test_unknown_id_is_404_problem(client):
    r = client.get("/circuits/c0123456789abcdef0123456")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert "c0123456789abcdef0123456" in r.json()["detail"]
    assert client.get("/circuits/missing").status_code == 404  # not even an id


def test_bad_parameters_are_named(client):
    r = client.get("/circuits", params={"limit": 0, "min_faithfulness": "high"})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert "query.limit" in r.json()["detail"] and "query.min_faithfulness" in r.json()["detail"]


def test_overlap_endpoints_answer_the_literature_questions(client):
    ids = load_literature(client)
    four = [ids[t] for t in ("numerals", "number-words", "months", "greater-than")]
    shared = client.get("/consensus", params={"ids": four}).json()["levels"][0]["support"]
    assert set(shared) == {"a6.h1", "a8.h8", "a9.h1", "m8", "m9", "m10"}
    pair = client.get("/overlap", params={"a": ids["ioi"], "b": ids["months"]}).json()["levels"][0]
    assert pair["shared"] == ["a0.h1", "a7.h9", "a10.h7"] and pair["n_shared"] == 3
    m = client.get("/matrix", params={"ids": list(ids.values())}).json()
    assert len(m["node"]) == 5 and m["node"][2][3] == pytest.approx(0.75)
    d = client.get("/diff", params={"a": ids["greater-than"], "b": ids["numerals"]}).json()
    assert d["only_in_a"]["node"] == ["a5.h1", "a5.h5", "a6.h9", "a7.h10", "a8.h11"]
    members = client.get("/components/gpt2/a9.h1/circuits").json()
    assert members["level"] == "node" and sorted(members["circuits"]) == sorted(four)
    bad = client.get("/components/gpt2/a12.h0/circuits")
    assert bad.status_code == 422 and "a12.h0" in bad.json()["detail"]


def test_consensus_needs_two_ids_and_valid_support(client):
    ids = load_literature(client)
    assert client.get("/consensus", params={"ids": [ids["ioi"]]}).status_code == 422
    r = client.get("/consensus", params={"ids": [ids["ioi"], ids["months"]], "min_support": 3})
    assert r.status_code == 422 and "min_support" in r.json()["detail"]


def test_writes_need_the_key_when_configured(store):
    client = TestClient(create_app(store, settings(key="s3cret")))
    doc = body(edge_circuit())
    r = client.post("/circuits", json=doc)
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
    assert client.post("/circuits", json=doc, headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.post("/circuits", json=doc, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201
    cid = ok.json()["id"]
    assert client.delete(f"/circuits/{cid}").status_code == 401
    assert client.get(f"/circuits/{cid}").status_code == 200
    assert client.delete(f"/circuits/{cid}", headers={"Authorization": "Bearer s3cret"}).status_code == 204
    assert client.get(f"/circuits/{cid}").status_code == 404


def test_health_and_docs(client):
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    assert "/circuits" in client.get("/openapi.json").json()["paths"]


def test_unreachable_store_is_503_not_500():
    down = Neo4jStore("bolt://127.0.0.1:9")
    client = TestClient(create_app(down, settings()))
    for path in ("/health", "/circuits"):
        r = client.get(path)
        assert r.status_code == 503 and r.headers["content-type"] == PROBLEM
        assert "unreachable" in r.json()["detail"]


def test_starting_the_api_does_not_import_torch(tmp_path):
    code = ("from circat.service.api.app import create_app; create_app(); import sys; "
            "assert 'torch' not in sys.modules and 'circat.workers' not in sys.modules")
    env = {"CIRCAT_STORE_URL": f"sqlite:///{tmp_path / 'x.db'}", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_the_console_script_stays_light_until_a_worker_command_runs(tmp_path):
    code = ("import sys; from circat.workers.cli import app; "
            "assert 'torch' not in sys.modules and 'transformer_lens' not in sys.modules")
    env = {"CIRCAT_STORE_URL": f"sqlite:///{tmp_path / 'x.db'}", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
