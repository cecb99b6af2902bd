"""A real ``circat serve`` process on a free loopback port, stopped by its pid (tests and bench/fuzz.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LiveServer:
    """A running API: its base URL and process id."""

    url: str
    pid: int
    port: int

    def rss_mb(self) -> float:
        """The server's resident memory now, in MB (from /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def health_seconds(self) -> float:
        """Seconds ``GET /health`` took (raises unless it answered 200)."""
        t = time.perf_counter()
        httpx.get(f"{self.url}/health", timeout=5, headers=self.read_headers()).raise_for_status()
        return time.perf_counter() - t

    def read_headers(self) -> dict[str, str]:
        key = os.environ.get("CIRCAT_READ_KEY")
        return {"Authorization": f"Bearer {key}"} if key else {}


@contextmanager
def live_server(store_url: str, log: Path, worker: bool = False, workers: int = 1,
                **env: str) -> Iterator[LiveServer]:
    """Start ``circat serve`` for ``store_url`` with extra ``CIRCAT_*`` settings; stop it by pid.

    Without ``worker`` the embedded job worker stays off (jobs stay queued); ``workers``: API processes.
    """
    port = free_port()
    full_env = {**os.environ, "CIRCAT_STORE_URL": store_url, **env}
    cmd = [sys.executable, "-c", "from workers.cli import main; main()", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--worker" if worker else "--no-worker", "--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", proc.pid, port)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"circat serve exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{server.url}/openapi.json", timeout=1, headers=server.read_headers()).is_success:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"circat serve did not answer in 30 s: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
