"""A real ``circat serve`` process on a free loopback port, stopped by its pid, and hostile clients of it
(tests and the benches)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
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
    read_key: str | None = None

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
        return {"Authorization": f"Bearer {self.read_key}"} if self.read_key else {}


@contextmanager
def live_server(store_url: str, log: Path, worker: bool = False, workers: int = 1,
                **env: str) -> Iterator[LiveServer]:
    """Start ``circat serve`` for ``store_url`` with extra ``CIRCAT_*`` settings; stop it by pid.

    Without ``worker`` the embedded job worker stays off (jobs stay queued); ``workers``: API processes.
    """
    port = free_port()
    full_env = {**os.environ, "CIRCAT_STORE_URL": store_url, **env}
    cmd = [sys.executable, "-c", "from circat.workers.cli import main; main()", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--worker" if worker else "--no-worker", "--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", proc.pid, port, full_env.get("CIRCAT_READ_KEY"))
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


def send_body(server: LiveServer, path: str, body: bytes) -> tuple[str, float]:
    """POST ``body`` to ``path`` without a key, uploading in another thread; the status line of the answer
    and the seconds until it arrived."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode())
        start = time.perf_counter()

        def upload() -> None:
            with contextlib.suppress(OSError):  # the server may stop reading once it has answered
                view = memoryview(body)
                for i in range(0, len(body), 1 << 20):
                    s.sendall(view[i:i + (1 << 20)])

        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        answer = b""
        while b"\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        took = time.perf_counter() - start
        return answer.split(b"\r\n", 1)[0].decode(errors="replace"), took


def poll_health(server: LiveServer, stop: threading.Event, worst: list[float]) -> None:
    """Time ``GET /health`` every 0.1 s until ``stop``; the slowest in ``worst[0]`` (30 s: no answer)."""
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                client.get(f"{server.url}/health")
                took = time.perf_counter() - t
            except httpx.HTTPError:
                took = 30.0
            worst[0] = max(worst[0], took)
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_after(pid: int) -> float:
    """Seconds until the process uses under 10 % of a core over half a second (at most 300 s)."""
    start = time.perf_counter()
    while time.perf_counter() - start < 300:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before < 0.05:
            return time.perf_counter() - start - 0.5
    return 300.0
