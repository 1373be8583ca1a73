"""A real uvicorn server (the one ``serve`` builds) for an app, in a thread of the test process, on
127.0.0.1 with a port the OS picks: real sockets and HTTP parsing without a model process."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from service.config import Settings
from service.server import build_server
from tests.support.waiting import wait_until


@contextmanager
def running_server(app: FastAPI, settings: Settings, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with ``build_server(app, settings)``; yields the base URL once the server listens
    (``/ready`` may still be 503: use ``wait_ready``). Stops the server at exit."""
    server = build_server(app, settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout, "the server started")
        assert thread.is_alive(), "the server thread died"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
