"""Hot-load: watch the prefix folder (watchfiles) and re-scan it when an entry or the state file changes.

Changes are debounced (a copy in progress produces many events; one re-scan follows the last of
them), and the re-scan runs in a thread: only changed entries are read again.

- What is watched: the folder itself and each real (not symlinked) sub-folder one level down (a PEFT
  adapter's files), never recursively: a symlinked directory (say, to /usr) is not walked.
  When a sub-folder appears or goes, the watch is set up again.
- A file that is not settled yet (changed a moment ago, no checksum) is looked at again when its
  settle window ends, even if no further event comes.
- Every ``reconcile_ms`` (if > 0) the folder is re-scanned even without an event: a polling watcher
  compares timestamps and sizes, so a rewrite of the same size within the filesystem's timestamp
  granularity (a PATCH toggling one prefix back, on another replica) sends no event, and inotify can
  overflow. A re-scan that finds nothing changed publishes nothing (the snapshot stays the same).
- ``mode``: ``native`` (inotify), ``poll`` (stat every ``poll_ms``: network filesystems such as NFS or
  SMB send no inotify events, so replicas sharing such a folder need it), ``auto`` = poll when the
  folder is on a network filesystem (read from /proc/mounts), native otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from pathlib import Path
from typing import Literal

from watchfiles import Change, awatch

from service.registry.names import HEADS_DIR, STATE_FILE, is_candidate
from service.registry.registry import PrefixRegistry

log = logging.getLogger(__name__)

WatchMode = Literal["auto", "native", "poll"]
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "lustre",
        "gpfs",
        "beegfs",
        "afs",
        "ncpfs",
        "efs",
    }
)


def filesystem_type(path: Path, mounts: str = "/proc/mounts") -> str | None:
    """The type of the filesystem holding ``path`` (the longest matching mount point), or None."""
    target = str(path.resolve())
    best, fstype = "", None
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, parts[2]
    return fstype


def use_polling(mode: WatchMode, folder: Path) -> bool:
    if mode == "auto":
        return filesystem_type(folder) in NETWORK_FILESYSTEMS
    return mode == "poll"


class FolderWatcher:
    """``start()`` a background task that keeps ``registry`` in step with its folder; ``stop()`` ends it."""

    def __init__(
        self,
        registry: PrefixRegistry,
        *,
        debounce_ms: int = 400,
        step_ms: int = 50,
        retry_s: float = 1.0,
        mode: WatchMode = "auto",
        poll_ms: int = 500,
        reconcile_ms: int = 0,
    ) -> None:
        self.registry = registry
        self.folder = registry.folder.resolve()
        self.state_folder = registry.state.folder.resolve()
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self.retry_s = retry_s
        self.poll_ms = poll_ms
        self.reconcile_ms = reconcile_ms
        self.polling = use_polling(mode, self.folder)
        self.refreshes = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._settle_task: asyncio.Task[None] | None = None
        self._reconcile_task: asyncio.Task[None] | None = None

    def relevant(self, change: Change, path: str) -> bool:
        """Only the folder's own entries count: not temp files of atomic writes, dot files, locks.
        The path is not resolved: a symlink dropped into the folder counts as the entry it is."""
        where = Path(os.path.abspath(path))
        if where.name == STATE_FILE and where.parent == self.state_folder:
            return True
        try:
            top = where.relative_to(self.folder).parts[0]
        except (ValueError, IndexError):
            return False
        return top == STATE_FILE or not top.startswith((".", "_"))

    def watch_paths(self) -> list[Path]:
        """The folder and its real sub-folders (PEFT adapters, the heads' folder), each watched without
        recursion; and the state folder when the state lives elsewhere (the ``state_dir`` setting)."""
        paths = [self.folder]
        if self.state_folder != self.folder:
            paths.append(self.state_folder)
        with contextlib.suppress(OSError):
            for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
                path = Path(entry.path)
                if (is_candidate(path) or entry.name == HEADS_DIR) and stat.S_ISDIR(
                    entry.stat(follow_symlinks=False).st_mode
                ):
                    paths.append(path)
        return paths

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prefix-folder-watcher")
        if self.reconcile_ms > 0:
            self._reconcile_task = asyncio.create_task(self._reconcile(), name="prefix-reconcile")

    async def stop(self) -> None:
        self._stop.set()
        for task in (self._task, self._settle_task, self._reconcile_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._settle_task = self._reconcile_task = None

    async def _reconcile(self) -> None:
        """Re-scan every ``reconcile_ms`` whatever the events said (see the module's docstring)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.reconcile_ms / 1000)
                return  # stopped
            await self._refresh()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # The folder may have changed between the initial scan and the watch starting.
                await self._refresh()
                paths = self.watch_paths()
                async for _changes in awatch(
                    *paths,
                    watch_filter=self.relevant,
                    debounce=self.debounce_ms,
                    step=self.step_ms,
                    stop_event=self._stop,
                    recursive=False,
                    force_polling=self.polling,
                    poll_delay_ms=self.poll_ms,
                ):
                    await self._refresh()
                    if self.watch_paths() != paths:
                        break  # a PEFT folder appeared or went: watch the new set
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
        self._schedule_settle()

    def _schedule_settle(self) -> None:
        """A file not settled yet gets another look when its settle window ends."""
        due = self.registry.pending_deadline()
        if (
            due is None
            or self._stop.is_set()
            or (self._settle_task is not None and not self._settle_task.done())
        ):
            return
        self._settle_task = asyncio.create_task(self._settle_later(due), name="prefix-settle")

    async def _settle_later(self, due: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), max(0.0, due - time.monotonic()) + 0.02)
            return  # stopped
        self._settle_task = None
        await self._refresh()
