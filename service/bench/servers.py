"""Start and stop benchmark servers on 127.0.0.1: our service and the infinity-emb peer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``with ServerProcess(cmd, ready_url) as srv:`` runs ``cmd`` until ``ready_url`` answers 200,
    and on exit sends SIGTERM (then SIGKILL after ``grace_s``). Output goes to ``log_path``."""

    def __init__(
        self,
        cmd: Sequence[str],
        ready_url: str,
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path,
        start_timeout_s: float = 300.0,
        grace_s: float = 20.0,
    ) -> None:
        self.cmd = list(cmd)
        self.ready_url = ready_url
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.grace_s = grace_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    def __enter__(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        start = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        while True:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.cmd[0]} exited with {self.proc.returncode} before ready:\n{tail}")
            if time.monotonic() - start > self.start_timeout_s:
                self.stop()
                raise TimeoutError(f"{self.cmd[0]} not ready after {self.start_timeout_s:g} s")
            try:
                if httpx.get(self.ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.startup_s = time.monotonic() - start
        return self

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(self.grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def our_server(
    port: int, *, model: Path, prefix_dir: Path, env: Mapping[str, str], log_path: Path
) -> ServerProcess:
    """``python -m service serve`` with the benchmark's settings (as PREFIX_EMBED_* variables)."""
    settings = {
        "PREFIX_EMBED_HOST": "127.0.0.1",
        "PREFIX_EMBED_PORT": str(port),
        "PREFIX_EMBED_MODEL": str(model),
        "PREFIX_EMBED_PREFIX_DIR": str(prefix_dir),
        "PREFIX_EMBED_WATCH": "false",
        "PREFIX_EMBED_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **env,
    }
    return ServerProcess(
        [sys.executable, "-m", "service", "serve"],
        f"http://127.0.0.1:{port}/ready",
        env=settings,
        log_path=log_path,
    )


def infinity_server(
    port: int, *, executable: Path, model: Path, device: str, served_name: str, log_path: Path
) -> ServerProcess:
    """infinity-emb's v2 CLI serving the same local model folder, offline, torch engine."""
    cmd = [
        str(executable),
        "v2",
        "--model-id",
        str(model),
        "--served-model-name",
        served_name,
        "--engine",
        "torch",
        "--device",
        device,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": "",  # our checkout must not shadow anything in the peer's environment
    }
    return ServerProcess(cmd, f"http://127.0.0.1:{port}/health", env=env, log_path=log_path)
