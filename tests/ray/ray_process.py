"""A real ``python -m service ray-serve`` process (local Ray, 127.0.0.1, a free port) for the Ray tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
READY_RE = re.compile(r"ray-serve ready: (\d+) replica\(s\) on (http://\S+) in ([\d.]+) s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RayServeProcess:
    """``start()`` runs ``ray-serve`` and waits for its ready line; ``stop()`` sends SIGTERM and waits."""

    def __init__(self, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.args = ["--host", "127.0.0.1", "--port", str(free_port()), "--device", "cpu", *args]
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.ready_s = 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, timeout: float = 240.0) -> RayServeProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service", "ray-serve", *self.args],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() can end Ray's processes too
            )
        deadline = time.monotonic() + timeout
        while not (match := READY_RE.search(self.log())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"ray-serve did not become ready:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        self.url, self.ready_s = match.group(2), float(match.group(3))
        return self

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM; returns the exit status (kills the process group if it does not exit in time)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"ray-serve ignored SIGTERM for {timeout} s:\n{self.log()[-4000:]}"
                ) from None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
