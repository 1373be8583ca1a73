"""Issue 23 items 5 and 1, against a real ``python -m service serve`` process (MiniLM, torch backend):

- 2,000 half-sent requests (slowloris) cost the server bounded memory, normal requests are served
  meanwhile (their latency with and without the flood is printed: timings are measured, never
  asserted), and every slow connection is closed with a 408 at its deadline.
- A FIFO planted at ``.state.lock`` fails a PATCH at once, and SIGTERM still ends the process cleanly
  (it used to hang in ``open()`` holding the registry lock).
"""

from __future__ import annotations

import os
import selectors
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from service.engine.backbone import Backbone
from tests.support.metrics import metric_value
from tests.support.server_process import ServerProcess, stop_gracefully
from tests.support.waiting import in_thread, wait_until

pytestmark = pytest.mark.slow

SLOW = 2_000
DEADLINE_S = 20  # client_timeout_s of the server: the flood stays open while it is measured
MEMORY_BOUND = 64 * 1024 * 1024  # bytes of server RSS the whole flood may add (~32 KB a connection)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def latencies(client: httpx.Client, phase: str, n: int = 15) -> list[float]:
    """Seconds of ``n`` /embed calls, each of a text not sent before (the vector cache never answers)."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        r = client.post("/embed", json={"inputs": f"a normal request number {i} {phase}"})
        out.append(time.perf_counter() - start)
        assert r.status_code == 200, r.text
    return out


def test_a_slow_client_flood_is_bounded_and_sigterm_still_works(
    tmp_path: Path,
    minilm: Backbone,
    minilm_path: Path,
    write_prefix: Callable[..., Path],
    server_process: Callable[..., ServerProcess],
    request: pytest.FixtureRequest,
) -> None:
    folder = tmp_path / "prefixes"
    folder.mkdir()
    write_prefix(folder, "alpha", minilm.spec, prefix_len=8, seed=0)
    args = ("--model", str(minilm_path), "--prefix-dir", str(folder), "--backend", "torch")
    args += ("--client-timeout-s", str(DEADLINE_S), "--no-watch")
    server = server_process(*args).wait_ready()
    assert server.proc is not None
    pid = server.proc.pid
    host, port = "127.0.0.1", server.port
    with httpx.Client(base_url=server.url, timeout=60) as client:
        latencies(client, "warm", 5)
        before = latencies(client, "before")
        rss_before = rss(pid)
        slow: list[socket.socket] = []
        request.addfinalizer(lambda: [sock.close() for sock in slow])
        for i in range(SLOW):
            sock = socket.create_connection((host, port), timeout=30)
            sock.sendall(f"POST /embed HTTP/1.1\r\nHost: x\r\nX-Slow: {i}\r\n".encode())  # never ends
            slow.append(sock)

        def open_connections() -> float:
            return metric_value(client.get("/metrics").text, "prefix_embed_open_connections")

        wait_until(lambda: open_connections() >= SLOW, 60, "the flood accepted")
        during = latencies(client, "during")
        rss_during = rss(pid)
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(
            f"\n{SLOW} slow connections: server RSS +{(rss_during - rss_before) / 2**20:.1f} MiB; "
            f"/embed median {statistics.median(before) * 1000:.1f} ms before, "
            f"{statistics.median(during) * 1000:.1f} ms during (max {max(during) * 1000:.1f} ms); load {load}"
        )
        assert rss_during - rss_before < MEMORY_BOUND
        # every slow connection gets its 408 and is closed at the deadline
        closed = 0
        deadline = time.monotonic() + DEADLINE_S + 60
        with selectors.DefaultSelector() as sel:
            for sock in slow:
                sel.register(sock, selectors.EVENT_READ)
            while closed < SLOW and time.monotonic() < deadline:
                for key, _ in sel.select(1.0):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data = sock.recv(65536)
                    assert data.startswith(b"HTTP/1.1 408"), data[:100]
                    sel.unregister(sock)
                    closed += 1
        assert closed == SLOW, f"{SLOW - closed} slow connections still open"
        wait_until(lambda: open_connections() <= 1, 30, "the flood's connections closed")
        after = latencies(client, "after")
        print(f"/embed median {statistics.median(after) * 1000:.1f} ms after the flood closed")
        assert metric_value(client.get("/metrics").text, "prefix_embed_requests_timed_out_total") == SLOW
        # the FIFO lock: a PATCH fails at once, and nothing hangs
        os.mkfifo(folder / ".state.lock")
        r = in_thread(lambda: client.patch("/prefixes/alpha", json={"enabled": False}), 20, "PATCH")
        assert r.status_code == 503, r.text
        assert "a FIFO" in r.json()["error"]["message"]
    stop_gracefully(server, 60)  # SIGTERM: exits 0 after a graceful shutdown
