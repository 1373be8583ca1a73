"""Hot-load: watch the prefix folder (watchfiles) and re-scan it when an entry or the state file changes.

Changes are debounced (a copy in progress produces many events; one re-scan follows the last of
them), and the re-scan runs in a thread: only changed entries are read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from watchfiles import Change, awatch

from service.registry.registry import PrefixRegistry
from service.registry.state import STATE_FILE

log = logging.getLogger(__name__)


class FolderWatcher:
    """``start()`` a background task that keeps ``registry`` in step with its folder; ``stop()`` ends it."""

    def __init__(
        self, registry: PrefixRegistry, *, debounce_ms: int = 400, step_ms: int = 50, retry_s: float = 1.0
    ) -> None:
        self.registry = registry
        self.folder = registry.folder.resolve()
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self.retry_s = retry_s
        self.refreshes = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def relevant(self, change: Change, path: str) -> bool:
        """Only the folder's own entries count: not temp files of atomic writes, dot files, locks."""
        try:
            top = Path(path).resolve().relative_to(self.folder).parts[0]
        except (ValueError, IndexError):
            return False
        return top == STATE_FILE or not top.startswith((".", "_"))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prefix-folder-watcher")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # The folder may have changed between the initial scan and the watch starting.
                await self._refresh()
                async for _changes in awatch(
                    self.folder,
                    watch_filter=self.relevant,
                    debounce=self.debounce_ms,
                    step=self.step_ms,
                    stop_event=self._stop,
                    recursive=True,
                ):
                    await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A folder that vanished or a watch that failed: keep serving, try again shortly.
                log.exception("watching %s failed; retrying in %.1f s", self.folder, self.retry_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.retry_s)

    async def _refresh(self) -> None:
        try:
            await asyncio.to_thread(self.registry.refresh)
            self.refreshes += 1
        except Exception:
            log.exception("re-scanning %s failed", self.folder)
