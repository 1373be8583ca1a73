"""Slow clients and connection floods, bounded in the HTTP protocol of ``serve`` (uvicorn's httptools
protocol plus two rules):

- **A request deadline** (``client_timeout_s``): a request's headers and body must arrive within that
  many seconds of its first byte; for the first request of a connection, of the connection itself, so a
  connection that never sends a byte is closed too. Past it the client gets a 408 with the JSON error
  body and the connection is closed; a handler waiting for the body sees a disconnect. (uvicorn's own
  keep-alive timeout covers the idle time between two requests; nothing bounded the time *within* one,
  so half-sent requests stayed open for ever.)
- **A connection cap** (``max_connections``): a connection beyond it gets a 503 at once (JSON error,
  ``Retry-After: 1``, nothing of it read) and is closed, so open connections, and the memory they hold,
  never exceed the cap plus those being turned away.

Under ``ray-serve`` the proxy is Ray's own server: these two rules apply to ``serve`` only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.config import Settings
from service.metrics import Metrics

log = logging.getLogger(__name__)

# A refused connection is half-closed at once, then closed after this long: closing at once, with the
# client's request still unread, makes the kernel reset it and the client may never see the 503.
REFUSED_LINGER_S = 1.0
# File descriptors kept above max_connections (the listening socket, prefix files, ONNX, logs...).
SPARE_FDS = 256


def error_bytes(status: int, code: str, message: str, extra: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response with the service's error body, closing the connection."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}}).encode()
    head = [STATUS_LINE[status]]
    fields = {"content-type": "application/json", "content-length": str(len(body)), "connection": "close"}
    for name, value in (fields | (extra or {})).items():
        head.append(f"{name}: {value}\r\n".encode())
    return b"".join([*head, b"\r\n", body])


def bounded_protocol(
    client_timeout_s: float, max_connections: int, metrics: Metrics | None = None
) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with the two rules of this module."""
    timed_out = error_bytes(
        408,
        "request_timeout",
        f"the request's headers and body did not arrive within {client_timeout_s:g} s (client_timeout_s)",
    )
    refused = error_bytes(
        503,
        "too_many_connections",
        f"the server has {max_connections} open connections, its limit (max_connections); retry shortly",
        {"retry-after": "1"},
    )

    class BoundedHttpProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if metrics is not None:
                metrics.open_connections.inc()
            if len(self.connections) > max_connections:
                self._refused = True
                if metrics is not None:
                    metrics.connections_refused.inc()
                transport.write(refused)
                if transport.can_write_eof():
                    transport.write_eof()
                self.loop.call_later(REFUSED_LINGER_S, transport.close)
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if not self._refused:  # a refused connection's request is never read
                super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # the first request's deadline runs from the connection's start
                self._arm()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if metrics is not None:
                metrics.open_connections.dec()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(client_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if metrics is not None:
                metrics.requests_timed_out.inc()
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                if cycle.response_started:  # the app answered early (a 413): just close
                    self.transport.close()
                    return
                cycle.disconnected = True  # the app's next receive() is a disconnect, its sends no-ops
                cycle.message_event.set()
            self.transport.write(timed_out)
            self.transport.close()

    return BoundedHttpProtocol


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit (soft, up to the hard one) to ``wanted``; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "open-file limit %d is below max_connections + %d = %d: connections beyond it fail at accept "
            "(raise `ulimit -n` or lower max_connections)",
            soft,
            SPARE_FDS,
            wanted,
        )
    return int(soft)


def protocol_options(settings: Settings, metrics: Metrics | None) -> dict[str, Any]:
    """The ``uvicorn.Config`` keyword arguments of the two rules (and an open-file limit that fits)."""
    raise_fd_limit(settings.max_connections + SPARE_FDS)
    return {
        "http": bounded_protocol(settings.client_timeout_s, settings.max_connections, metrics),
        "backlog": max(2048, min(settings.max_connections, 65535)),
    }
