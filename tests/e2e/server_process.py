"""A real ``python -m service serve`` process on 127.0.0.1 (any free port), for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
_PORT_RE = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class ServerProcess:
    """``start()`` launches the server and learns its port from the log; ``stop()`` sends SIGTERM."""

    def __init__(self, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.args = ["--host", "127.0.0.1", "--port", "0", "--device", "cpu", "--log-level", "info", *args]
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> ServerProcess:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", *self.args],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self.url:
            if match := _PORT_RE.search(self.log()):
                self.url = f"http://127.0.0.1:{match.group(1)}"
                break
            assert self.proc.poll() is None, f"server exited early:\n{self.log()}"
            assert time.monotonic() < deadline, f"server did not start:\n{self.log()}"
            time.sleep(0.1)
        while httpx.get(f"{self.url}/ready").status_code != 200:
            assert self.proc.poll() is None, f"server exited early:\n{self.log()}"
            assert time.monotonic() < deadline, f"server not ready:\n{self.log()}"
            time.sleep(0.1)
        return self

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, and check that the server shut down gracefully (lifespan shutdown completed).

        A clean drain exits 0 (service/server.py).
        """
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"server ignored SIGTERM for {timeout} s:\n{self.log()}") from None
        log = self.log()
        assert self.proc.returncode == 0, f"exit status {self.proc.returncode}:\n{log}"
        assert "Application shutdown complete" in log, log
        assert "Traceback" not in log, log
