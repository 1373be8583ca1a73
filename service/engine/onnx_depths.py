"""The ONNX backend's sessions per fan-out depth, and the background export of a depth not yet open.

Each graph holds one fan-out depth (where rows fan out from their texts is control flow). Depth 0 is
open from the start; a deeper depth is exported (or read from the cache) in a background thread the
first time a call wants it. Until it lands, calls run at the deepest open depth below it, which is
exact (a prefix's slots are masked below its own first layer) and only forgoes the trunk saving, so
no request ever waits on an export. One export runs at a time (each loads a torch model); a failed
one is logged, kept in ``failures`` and not retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class DepthSessions:
    """The sessions of one fan-out depth: ``shared`` for calls side by side, and a ``lone`` one, with
    every CPU, for a call that runs alone (the adaptive call plan).

    The lone session is a second copy of the weights (ORT prepacks them per session: ~85 MB per depth
    for fp32 MiniLM), so it is opened on demand: the first lone call of this depth starts opening it in
    the background and runs on ``shared`` meanwhile (no call waits on it), later lone calls use it. A
    deployment that never sends a lone call (every request beside another, or several prefix depths
    per request) never pays for it. ``open_lone`` None: no lone session (a fixed plan, CUDA)."""

    def __init__(self, path: Path, shared: Any, open_lone: Callable[[], Any] | None = None) -> None:
        self.path = path
        self.shared = shared
        self._open_lone = open_lone
        self._lone: Any | None = None
        self._lock = threading.Lock()
        self._opening: threading.Thread | None = None
        self.lone_failure: str | None = None

    def pick(self, alone: bool) -> Any:
        """The session for a call: the lone one for a call that runs alone once it is open."""
        if not alone or self._open_lone is None:
            return self.shared
        lone = self._lone
        if lone is None:
            self._start_opening()
            return self.shared
        return lone

    @property
    def lone_open(self) -> bool:
        return self._lone is not None

    def _start_opening(self) -> None:
        with self._lock:
            if self._opening is not None or self.lone_failure is not None or self._lone is not None:
                return
            self._opening = threading.Thread(target=self._open, name="onnx-lone-session", daemon=True)
            self._opening.start()

    def _open(self) -> None:
        assert self._open_lone is not None
        try:
            self._lone = self._open_lone()
            log.info("ONNX session for lone calls open (%s)", self.path)
        except Exception as exc:  # the shared session keeps serving lone calls
            self.lone_failure = f"{type(exc).__name__}: {exc}"
            log.exception(
                "opening the lone-call session of %s failed; lone calls use the shared one", self.path
            )

    def wait(self, timeout: float | None = None) -> None:
        """Block until a lone session being opened is open (or failed)."""
        with self._lock:
            thread = self._opening
        if thread is not None:
            thread.join(timeout)


class DepthSet:
    """Open depths and exports in flight. ``open_depth(depth)`` exports/opens one (None: depth 0 only)."""

    def __init__(self, first: DepthSessions, open_depth: Callable[[int], DepthSessions] | None) -> None:
        self._sessions: dict[int, DepthSessions] = {0: first}
        self._open_depth = open_depth
        self._lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._exporting: dict[int, threading.Thread] = {}
        self.failures: dict[int, str] = {}

    def __getitem__(self, depth: int) -> DepthSessions:
        return self._sessions[depth]

    def usable(self, depth: int) -> int:
        """``depth`` when it is open; else the deepest open depth below it, and its export starts in
        the background (once)."""
        if depth in self._sessions:
            return depth
        if self._open_depth is not None and depth not in self.failures:
            with self._lock:
                if depth not in self._sessions and depth not in self._exporting:
                    thread = threading.Thread(
                        target=self._export, args=(depth,), name=f"onnx-export-{depth}", daemon=True
                    )
                    self._exporting[depth] = thread
                    thread.start()
        return max(d for d in list(self._sessions) if d <= depth)

    def _export(self, depth: int) -> None:
        assert self._open_depth is not None
        try:
            with self._export_lock:
                sessions = self._open_depth(depth)
            with self._lock:
                self._sessions[depth] = sessions
            log.info("ONNX fan-out depth %d ready (%s)", depth, sessions.path)
        except Exception as exc:
            self.failures[depth] = f"{type(exc).__name__}: {exc}"
            log.exception("ONNX export of fan-out depth %d failed; it runs at a shallower depth", depth)
        finally:
            with self._lock:
                self._exporting.pop(depth, None)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every export started so far has landed or failed (``timeout``: one pass), and
        every lone session being opened is open."""
        while True:
            with self._lock:
                threads = list(self._exporting.values())
            for thread in threads:
                thread.join(timeout)
            if not threads or timeout is not None:
                break
        for sessions in list(self._sessions.values()):
            sessions.wait(timeout)

    @property
    def exporting(self) -> list[int]:
        with self._lock:
            return sorted(self._exporting)

    @property
    def depths(self) -> list[int]:
        return sorted(self._sessions)

    @property
    def lone_depths(self) -> list[int]:
        """Depths whose lone-call session is open."""
        return sorted(d for d, s in list(self._sessions.items()) if s.lone_open)

    def files(self) -> dict[str, str]:
        return {str(d): str(s.path) for d, s in sorted(self._sessions.items())}
