"""The property-based API fuzzer (schemathesis, every check, fixed seed) against a live server on each store."""

from __future__ import annotations

import pytest

from tests.conftest import neo4j_uri, wipe_neo4j
from tests.fuzzing import config, fuzz, seed
from tests.live_server import live_server

EXAMPLES = 12  # per operation and phase: bounded so the suite stays fast; bench/fuzz.py runs thousands


@pytest.mark.parametrize("key", [None, "fuzz-key"])
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def test_the_fuzzer_finds_nothing(tmp_path, backend, key):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    else:
        url = neo4j_uri()
        wipe_neo4j(url)
    ids = seed(url)
    cfg = tmp_path / "schemathesis.toml"
    cfg.write_text(config(ids, key))
    env = {"CIRCAT_API_KEY": key} if key else {}
    with live_server(url, tmp_path / "serve.log", **env) as server:
        idle = server.rss_mb()
        run = fuzz(server.url, cfg, EXAMPLES)
        assert server.health_seconds() < 1.0
        grown = server.rss_mb() - idle
    assert run.returncode == 0 and run.failures == 0, run.output[-6000:]
    assert run.generated > 100, run.output[-2000:]
    assert grown < 300, f"server memory grew {grown:.0f} MB under the fuzz run"
