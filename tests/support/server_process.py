"""A real server process on 127.0.0.1 for end-to-end tests: started, awaited, stopped gracefully.

By default ``python -m service serve`` with ``--port 0`` (the OS picks a free port; the URL is read
from uvicorn's log line, so no port can be taken between choosing and binding it). A test that must
run another command line (the container's CMD) passes ``command`` and ``url``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
_URL_RE = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
SERVE = (sys.executable, "-m", "service", "serve")
SERVE_DEFAULTS = ("--host", "127.0.0.1", "--port", "0", "--device", "cpu", "--log-level", "info")


class ServerProcess:
    """``start()`` launches it, ``wait_ready()`` waits for its URL and ``/ready``; ``terminate()``
    sends SIGTERM; ``stop()`` sends it unless sent, waits, and checks the shutdown was graceful."""

    def __init__(
        self,
        log_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        url: str = "",
        cwd: Path = REPO,
        inherit_env: bool = True,
    ) -> None:
        self.log_path = log_path
        self.command = [*(command or (*SERVE, *SERVE_DEFAULTS)), *args]
        base = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"} if inherit_env else {}
        self.env = {**base, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = url
        self.signalled = False

    def start(self) -> ServerProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        assert self.proc is not None, "not started"
        return self.proc.poll() is None

    def _alive(self) -> None:
        assert self.running(), f"server exited early:\n{self.log()}"

    def wait_url(self, timeout: float = 120.0) -> str:
        """The URL uvicorn logs once it listens (the real port, also when started with port 0)."""

        def url() -> str:
            self._alive()
            match = _URL_RE.search(self.log())
            return match.group(1) if match else ""

        if not self.url:
            self.url = wait_until(url, timeout, "the server's URL in its log", poll=0.05)
        return self.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        def ready() -> bool:
            self._alive()
            try:
                return httpx.get(f"{self.url}/ready", timeout=10).status_code == 200
            except httpx.TransportError:
                return False

        self.wait_url(timeout)
        wait_until(ready, timeout, "server /ready", poll=0.05)
        return self

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def terminate(self) -> None:
        """SIGTERM once (a second one would cut the graceful shutdown short)."""
        assert self.proc is not None
        if not self.signalled and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.signalled = True

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server ignored SIGTERM for {timeout} s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, and check that the server shut down gracefully (lifespan shutdown completed).

        A clean drain exits 0 (service/server.py; stock uvicorn re-raised SIGTERM: -15).
        """
        self.terminate()
        code = self.wait_exit(timeout)
        log = self.log()
        assert code == 0, f"exit status {code}:\n{log}"
        assert "Application shutdown complete" in log, log
        assert "Traceback" not in log, log
