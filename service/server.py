"""The uvicorn server of ``python -m service serve``: graceful SIGTERM drain, redacted access log,
slow clients bounded (service/connections.py).

- SIGTERM stops accepting connections, lets in-flight requests finish (up to their deadline), runs
  the lifespan shutdown and then returns normally: a clean drain exits 0. (Stock uvicorn re-raises
  the signal afterwards, so the process died with -15, which orchestrators read as a crash.)
  SIGINT keeps uvicorn's behaviour.
- The access log never shows query values: a key sent as ``?api_key=...`` would otherwise be
  written to the log in clear. Parameter names stay, values become ``[redacted]``.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.config import Settings
from service.connections import protocol_options

ACCESS_LOGGER = "uvicorn.access"
REDACTED = "[redacted]"


def redact_query(path: str) -> str:
    """``/x?api_key=s&b=1`` -> ``/x?api_key=[redacted]&b=[redacted]``; a part without ``=`` (``?s``)
    is redacted whole (it may be the secret itself); a path without a query is returned as is."""
    base, sep, query = path.partition("?")
    if not sep or not query:
        return path
    parts = [f"{p.partition('=')[0]}={REDACTED}" if "=" in p else REDACTED for p in query.split("&")]
    return base + "?" + "&".join(parts)


class QueryRedactingFilter(logging.Filter):
    """Rewrites uvicorn's access record ``(client, method, full_path, http_version, status)``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def install_access_log_redaction() -> None:
    """Attach the filter to uvicorn's access logger once (idempotent; every app does it)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, QueryRedactingFilter) for f in logger.filters):
        logger.addFilter(QueryRedactingFilter())


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose SIGTERM drains and then exits normally (status 0)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM:
            self.should_exit = True  # graceful: finish in-flight requests; not re-raised afterwards
            return
        super().handle_exit(sig, frame)


def build_server(app: FastAPI, settings: Settings) -> DrainingServer:
    """uvicorn for ``app`` with the service's rules: graceful SIGTERM, redacted access log, and slow
    clients bounded (a request deadline and a connection cap: service/connections.py)."""
    install_access_log_redaction()
    runtime = getattr(app.state, "runtime", None)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # SIGTERM: stop accepting, let in-flight requests finish (up to their deadline), then stop.
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 1,
        log_config=None,  # keep the logging configured by the caller
        **protocol_options(settings, runtime.metrics if runtime is not None else None),
    )
    return DrainingServer(config)
