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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthSessions:
    """The sessions of one fan-out depth: ``shared`` for calls side by side, ``lone`` (None: use
    ``shared``) for a call that runs alone, with every CPU (the adaptive call plan)."""

    path: Path
    shared: Any
    lone: Any | None = None

    def pick(self, alone: bool) -> Any:
        return self.lone if alone and self.lone is not None else self.shared


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
        """Block until every export started so far has landed or failed (``timeout``: one pass)."""
        while True:
            with self._lock:
                threads = list(self._exporting.values())
            if not threads:
                return
            for thread in threads:
                thread.join(timeout)
            if timeout is not None:
                return

    @property
    def exporting(self) -> list[int]:
        with self._lock:
            return sorted(self._exporting)

    @property
    def depths(self) -> list[int]:
        return sorted(self._sessions)

    def files(self) -> dict[str, str]:
        return {str(d): str(s.path) for d, s in sorted(self._sessions.items())}
