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
        cwd: Path | None = None,
    ) -> None:
        self.cmd = list(cmd)
        self.ready_url = ready_url
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.grace_s = grace_s
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    def __enter__(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        start = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
        )
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

    def rss_mb(self) -> float:
        """Resident memory of the server and its child processes, in MB (0 when it is not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        return round(tree_rss_kb(self.proc.pid) / 1024, 1)

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
        # Benchmarks repeat their texts every round: without this, repeats would be answered from the
        # vector cache and the forward pass would not be measured (a cache benchmark sets it itself).
        "PREFIX_EMBED_VECTOR_CACHE_BYTES": "0",
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


def tree_rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` plus that of its descendants (from /proc; 0 where it cannot be read)."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += tree_rss_kb(int(child))
    except (OSError, ValueError):
        pass
    return total


def infinity_server(
    port: int,
    *,
    executable: Path,
    model: Path,
    device: str,
    served_name: str,
    log_path: Path,
    engine: str = "torch",
) -> ServerProcess:
    """infinity-emb's v2 CLI serving the same local model folder, offline.

    ``engine="optimum"``: ``model`` is a folder holding an ONNX export (see :func:`export_for_optimum`).
    infinity 0.0.78 lists a local folder's files as absolute paths and optimum then refuses them as a
    file name, so the server runs inside that folder with ``--model-id .`` (relative paths)."""
    optimum = engine == "optimum"
    cmd = [
        str(executable),
        "v2",
        "--model-id",
        "." if optimum else str(model),
        "--served-model-name",
        served_name,
        "--engine",
        engine,
        "--device",
        device,
        "--pooling-method",
        "mean",  # what all-MiniLM-L6-v2 was trained with (an ONNX folder has no pooling config)
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
    return ServerProcess(
        cmd,
        f"http://127.0.0.1:{port}/health",
        env=env,
        log_path=log_path,
        cwd=model if optimum else None,
    )


def export_for_optimum(peer_exe: Path, model: Path, folder: Path) -> Path:
    """The ONNX export infinity's optimum engine serves, made once with the peer venv's
    ``optimum-cli export onnx --task feature-extraction --library-name transformers``."""
    if (folder / "model.onnx").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(peer_exe.parent / "optimum-cli"),
        "export",
        "onnx",
        "--model",
        str(model),
        "--task",
        "feature-extraction",
        "--library-name",
        "transformers",
        str(folder),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1800)
    return folder
