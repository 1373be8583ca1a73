"""Wait until a ``FolderWatcher`` really watches (its first scan comes before its watch is set up)."""

from __future__ import annotations

from pathlib import Path

from service.registry.watcher import FolderWatcher
from tests.support.waiting import async_wait_until


async def until_watching(watcher: FolderWatcher, folder: Path, timeout: float = 10.0) -> None:
    """Return once a change in ``folder`` has made ``watcher`` rescan: touch a file that is no prefix
    (``probe.md``) until a rescan follows, so that a file written next is seen by the watch."""
    await async_wait_until(lambda: watcher.refreshes >= 1, timeout, "the watcher's first scan")
    first = watcher.refreshes
    probe = folder / "probe.md"

    def rescanned() -> bool:
        probe.write_text(f"probe {watcher.refreshes}")
        return watcher.refreshes > first

    await async_wait_until(rescanned, timeout, "a rescan after a change event", poll=0.1)
