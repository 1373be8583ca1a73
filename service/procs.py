"""Servers as child processes on loopback: the one launcher of the tree, and a free port.

The benchmarks (``service/bench/``) and the tests (``tests/support/server_process.py``) both start
servers through :class:`ServerProcess`: ``python -m service serve``, ``ray-serve``, the infinity peer,
the container's command. A server started on port 0 says where it listens in its log, and the URL is
read from there (``url_pattern``), so no port can be taken between choosing and binding it; a server
that must be told its port gets one from :func:`free_port`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import httpx

from service.waiting import wait_until

# What uvicorn logs (level info) once it listens; group 1 is the URL.
UVICORN_URL = re.compile(r"Uvicorn running on (http://[\w.\-\[\]:]+)")
T = TypeVar("T")
POLL_S = 0.05  # how often a starting server is asked (bounds how soon "ready" is noticed)
LOG_TAIL_CHARS = 4000


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago (another process may take it before it is bound:
    prefer port 0 and reading the bound port where the server allows it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``command`` as a child process, output to ``log_path``.

    ``start()`` launches it; ``wait_ready()`` waits for its URL (``url``, or the first group of
    ``url_pattern`` in its log) and then for ``GET url + ready_path`` to answer 200, failing at once if
    the process exits; ``stop()`` sends SIGTERM and, after ``grace_s``, SIGKILL. ``with`` does both.
    ``own_group``: the process leads its own process group and a kill ends its children too (Ray).
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        cwd: Path | None = None,
        url: str = "",
        url_pattern: re.Pattern[str] = UVICORN_URL,
        ready_path: str = "/ready",
        own_group: bool = False,
        grace_s: float = 30.0,
        start_timeout_s: float = 300.0,
    ) -> None:
        self.command = list(command)
        self.log_path = log_path
        self.env = {**(os.environ if inherit_env else {}), **(env or {})}
        self.cwd = cwd
        self.url = url
        self.url_pattern = url_pattern
        self.ready_path = ready_path
        self.own_group = own_group
        self.grace_s = grace_s
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.signalled = False
        self.started_at = 0.0
        self.startup_s = 0.0  # start() to ready, set by wait_ready()

    # --- start ---------------------------------------------------------------------------------
    def start(self) -> ServerProcess:
        """Launch the process (not awaited: several servers can load at once)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_group,
            )
        self.started_at = time.monotonic()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log()[-chars:]

    def running(self) -> bool:
        if self.proc is None:
            raise RuntimeError(f"{self.command[0]} was not started")
        return self.proc.poll() is None

    def _check_alive(self) -> None:
        if not self.running():
            assert self.proc is not None
            raise RuntimeError(
                f"{' '.join(self.command[:4])} exited with {self.proc.returncode} before it was ready:\n"
                f"{self.log_tail()}"
            )

    def _wait(self, cond: Callable[[], T], timeout: float, what: str) -> T:
        try:
            return wait_until(cond, timeout, what, poll=POLL_S)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; {self.command[0]} log:\n{self.log_tail()}") from None

    def wait_url(self, timeout: float | None = None) -> str:
        """The URL the server listens on (the real port, also when started with port 0)."""

        def found() -> str:
            self._check_alive()
            match = self.url_pattern.search(self.log())
            return match.group(1) if match else ""

        if not self.url:
            self.url = self._wait(found, timeout or self.start_timeout_s, "the server's URL in its log")
        return self.url

    def wait_ready(self, timeout: float | None = None) -> ServerProcess:
        """Wait until ``GET url + ready_path`` answers 200 (``startup_s``: seconds since ``start()``)."""

        def ready() -> bool:
            self._check_alive()
            try:
                return httpx.get(f"{self.url}{self.ready_path}", timeout=10).status_code == 200
            except httpx.TransportError:
                return False

        self.wait_url(timeout)
        self._wait(ready, timeout or self.start_timeout_s, f"{self.ready_path} answering 200")
        self.startup_s = time.monotonic() - self.started_at
        return self

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    # --- stop ----------------------------------------------------------------------------------
    def terminate(self) -> None:
        """SIGTERM once (a second one would cut a graceful shutdown short)."""
        if self.proc is not None and not self.signalled and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.signalled = True

    def wait_exit(self, timeout: float | None = None) -> int:
        """The exit status; after ``timeout`` (default ``grace_s``) the process is killed and
        :class:`TimeoutError` names how long it ignored SIGTERM."""
        if self.proc is None:
            raise RuntimeError(f"{self.command[0]} was not started")
        timeout = self.grace_s if timeout is None else timeout
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(
                f"{self.command[0]} ignored SIGTERM for {timeout:g} s:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL (the whole process group with ``own_group``), and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            if self.own_group:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout`` (default ``grace_s``), else SIGKILL. The exit status
        (negative: the signal that ended it), None if never started."""
        if self.proc is None:
            return None
        self.terminate()
        try:
            return self.wait_exit(timeout)
        except TimeoutError:
            return self.proc.returncode

    def rss_mb(self) -> float:
        """Resident memory of the server and its child processes, in MB (0 when it is not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        return round(tree_rss_kb(self.proc.pid) / 1024, 1)

    def __enter__(self) -> ServerProcess:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:
            self.kill()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


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
