"""The one launcher (service/procs.py) and the one wait (service/waiting.py), on small stdlib servers:
the URL read from the log, readiness, an early exit, SIGTERM, a kill after the grace period, and a
process group ended whole."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from service.procs import ServerProcess, free_port
from service.waiting import async_wait_until, wait_until

# Answers 200 on /ready (404 elsewhere); prints its URL once it listens; with IGNORE_TERM it ignores
# SIGTERM; with CHILD it first starts a child process that ignores SIGTERM and prints that child's pid.
SERVER = """
import http.server, os, signal, subprocess, sys
if os.environ.get("CHILD"):
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    print(f"child {child.pid}", flush=True)
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ready" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
server.serve_forever()
"""
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


def stdlib_server(tmp_path: Path, **env: str) -> ServerProcess:
    return ServerProcess(
        [sys.executable, "-c", SERVER],
        log_path=tmp_path / "server.log",
        env=env,
        url_pattern=LISTENING,
        grace_s=5,
        start_timeout_s=30,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0  # a zombie is gone too


def test_url_from_the_log_then_ready_then_sigterm(tmp_path: Path) -> None:
    with stdlib_server(tmp_path) as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
        assert server.port == int(server.url.rsplit(":", 1)[1])
        assert server.startup_s > 0
        assert server.rss_mb() > 0
        with server.client() as client:
            assert client.get("/ready").status_code == 200
            assert client.get("/other").status_code == 404
    assert server.proc is not None
    assert server.proc.returncode == -signal.SIGTERM  # the stdlib server does not trap SIGTERM
    assert server.stop() == -signal.SIGTERM  # stopping again only reports the status


def test_an_early_exit_fails_the_wait_with_the_log(tmp_path: Path) -> None:
    server = ServerProcess(
        [sys.executable, "-c", "print('bad option --nope'); raise SystemExit(2)"],
        log_path=tmp_path / "bad.log",
        start_timeout_s=30,
    )
    with pytest.raises(RuntimeError, match=r"exited with 2 before it was ready:\nbad option --nope"):
        server.start().wait_ready()


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    server = stdlib_server(tmp_path, IGNORE_TERM="1").start().wait_ready()
    assert server.stop(timeout=0.5) == -signal.SIGKILL
    server = stdlib_server(tmp_path, IGNORE_TERM="1").start().wait_ready()
    server.terminate()
    with pytest.raises(TimeoutError, match="ignored SIGTERM for 0.5 s"):
        server.wait_exit(0.5)
    assert not server.running()


def test_own_group_kills_the_children_too(tmp_path: Path) -> None:
    server = stdlib_server(tmp_path, CHILD="1", IGNORE_TERM="1")
    server.own_group = True
    server.start().wait_ready()
    match = re.search(r"child (\d+)", server.log())
    assert match
    child = int(match.group(1))
    assert alive(child)
    assert server.stop(timeout=0.5) == -signal.SIGKILL
    wait_until(lambda: not alive(child), 10, "the child process ended")


def test_a_free_port_can_be_bound() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_wait_until_returns_the_value_or_names_what_timed_out() -> None:
    values = iter([0, "", None, "found"])
    assert wait_until(lambda: next(values), 5, poll=0) == "found"
    with pytest.raises(TimeoutError, match=r"^the answer not reached after 0\.05 s$"):
        wait_until(lambda: False, 0.05, "the answer")


def test_async_wait_until_yields_to_the_loop() -> None:
    async def scenario() -> int:
        box: list[int] = []
        asyncio.get_running_loop().call_soon(box.append, 7)  # runs only if the wait yields
        return await async_wait_until(lambda: box[0] if box else 0, 5)

    assert asyncio.run(scenario()) == 7
    with pytest.raises(TimeoutError, match="never not reached"):
        asyncio.run(async_wait_until(lambda: False, 0.05, "never"))
