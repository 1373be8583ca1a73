"""Real server processes for the end-to-end and Ray tests, through the one launcher of the tree,
:class:`service.procs.ServerProcess` (the benchmarks start theirs with it too), with the tests'
defaults: this checkout on ``PYTHONPATH``, offline, loopback, port 0 (the URL is read from the log).

- :func:`serve_process`: ``python -m service serve`` (not started: ``.start()``, then ``.wait_ready()``,
  so that several servers can load at once)
- :func:`ray_process`: ``python -m service ray-serve`` on a local Ray (not started)
- :func:`stop_gracefully`: SIGTERM, and check the shutdown was graceful
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from service.bench.servers import SERVE_COMMAND, ray_serve_process
from service.procs import ServerProcess, free_port

__all__ = ["REPO", "ServerProcess", "free_port", "ray_process", "serve_process", "stop_gracefully"]

REPO = Path(__file__).resolve().parents[2]
TEST_ENV = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
SERVE_DEFAULTS = ("--host", "127.0.0.1", "--port", "0", "--device", "cpu", "--log-level", "info")


def serve_process(log_path: Path, *args: str, env: Mapping[str, str] | None = None) -> ServerProcess:
    """``python -m service serve`` on 127.0.0.1, port 0, CPU, log level info (uvicorn logs its URL),
    then ``args``; ``env`` on top of this process's environment."""
    return ServerProcess(
        [*SERVE_COMMAND, *SERVE_DEFAULTS, *args], log_path=log_path, env={**TEST_ENV, **(env or {})}, cwd=REPO
    )


def ray_process(log_path: Path, *args: str, env: Mapping[str, str] | None = None) -> ServerProcess:
    """``python -m service ray-serve`` on 127.0.0.1, port 0, CPU, then ``args`` (needs the ``ray`` extra);
    ready once every replica is (``.start().wait_ready()``)."""
    return ray_serve_process(log_path, *args, env={**TEST_ENV, **(env or {})}, cwd=REPO)


def stop_gracefully(server: ServerProcess, timeout: float = 30.0) -> None:
    """SIGTERM; the server must exit 0 within ``timeout`` after a complete lifespan shutdown, with no
    traceback in its log (a clean drain exits 0: service/server.py; stock uvicorn re-raised SIGTERM)."""
    code = server.stop(timeout)
    log = server.log()
    assert code == 0, f"exit status {code} (negative: killed by that signal):\n{log}"
    assert "Application shutdown complete" in log, log
    assert "Traceback" not in log, log
