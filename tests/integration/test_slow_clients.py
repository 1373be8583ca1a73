"""Issue 23 item 5: slow clients are bounded in ``serve``'s server (the fake encoder, a real socket).

- A request whose headers or body do not arrive within ``client_timeout_s`` gets a 408 and is closed
  (a connection that never sends a byte too); a normal request meanwhile is served.
- Beyond ``max_connections`` open connections, a new one gets a 503 at once and is closed.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.config import Settings
from tests.support.fake_encoder import FakeEncoder
from tests.support.http import fill_folder, wait_ready
from tests.support.inthread import running_server
from tests.support.metrics import metric_value
from tests.support.waiting import wait_until


@contextmanager
def serving(tmp_path: Path, **opts: object) -> Iterator[str]:
    settings = Settings(prefix_dir=fill_folder(tmp_path / "prefixes"), log_level="warning", **opts)  # type: ignore[arg-type]
    with running_server(create_app(settings, encoder=FakeEncoder()), settings) as base:
        with httpx.Client(base_url=base, timeout=10) as client:
            wait_ready(client)
        yield base


def connect(base: str, first_bytes: bytes = b"") -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (the socket's own timeout bounds the wait)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def error_of(raw: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)["error"]


BODY = json.dumps({"inputs": "the cat sat"}).encode()
PARTS = {
    "nothing": b"",
    "half the headers": b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Ty",
    "headers, half the body": b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY[:5],
}


@pytest.mark.parametrize("sent", PARTS)
def test_a_request_that_does_not_arrive_in_time_gets_408_and_is_closed(sent: str, tmp_path: Path) -> None:
    with serving(tmp_path, client_timeout_s=0.5) as base:
        slow = connect(base, PARTS[sent])
        # a normal request on another connection is served meanwhile
        r = httpx.post(f"{base}/embed", json={"inputs": "hello"}, timeout=10)
        assert r.status_code == 200, r.text
        status, headers, error = error_of(read_all(slow))
        assert (status, headers["connection"], error["code"]) == (408, "close", "request_timeout")
        assert "client_timeout_s" in error["message"]
        slow.close()
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert metric_value(metrics, "prefix_embed_requests_timed_out_total") == 1.0


def test_a_keep_alive_connection_gets_a_fresh_deadline_per_request(tmp_path: Path) -> None:
    with serving(tmp_path, client_timeout_s=2.0) as base, httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(3):  # one connection, requests well within their deadlines
            assert client.post("/embed", json={"inputs": "hi"}).status_code == 200


def test_connections_beyond_the_cap_get_503_at_once(tmp_path: Path) -> None:
    with serving(tmp_path, max_connections=4, client_timeout_s=60) as base:
        idle = [connect(base) for _ in range(4)]

        def refused() -> bytes:
            with connect(base, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
                raw = read_all(sock)
            return raw if raw.startswith(b"HTTP/1.1 503") else b""

        raw = wait_until(refused, 20, "a connection beyond the cap refused")
        status, headers, error = error_of(raw)
        assert (status, headers["retry-after"], error["code"]) == (503, "1", "too_many_connections")
        assert "max_connections" in error["message"]
        idle.pop().close()

        def served() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(served, 20, "a connection under the cap served")
        for sock in idle:
            sock.close()
        wait_until(
            lambda: metric_value(httpx.get(f"{base}/metrics").text, "prefix_embed_open_connections") <= 1
        )
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert metric_value(metrics, "prefix_embed_connections_refused_total") >= 1
