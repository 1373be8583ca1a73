"""The ``heads/`` sub-folder of the prefix folder: which head files it holds, each validated once per change.

The prefix registry owns one :class:`HeadFolder` and re-scans it with the prefixes (initial scan,
watcher events, reconcile), so one published snapshot carries the bank and the heads together.
Files are read through the registry's safe reader (regular files inside the folder, a byte limit on
what is read). A head file turning bad keeps its last good version serving (``stale``), as a prefix
does. Every head carries a ``content_sha256``, so a file still being written never validates: no
settle window is needed.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from service.engine.backbone import BackboneSpec
from service.errors import HeadNotFound, InvalidHeadFile, InvalidPrefixFile, shown, shown_list
from service.heads.format import parse_head
from service.heads.head import TaskHead
from service.registry.limits import PrefixLimits
from service.registry.loader import Rejected, rejection_reason
from service.registry.names import HEADS_DIR, NATIVE_SUFFIX, PICKLE_SUFFIXES, is_candidate
from service.registry.reading import read_limited
from service.registry.writer import atomic_write

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    signature: tuple[int, ...]
    head: TaskHead | None = None  # the file's current content, when valid
    error: str | None = None
    last_good: TaskHead | None = None  # served while the file is bad


@dataclass(frozen=True)
class HeadScan:
    """The heads to serve (name -> head), which of them are stale, and the rejected files."""

    heads: dict[str, TaskHead]
    stale: frozenset[str]
    rejected: tuple[Rejected, ...]


def _signature(path: Path) -> tuple[int, ...]:
    lst = path.lstat()  # a symlink swapped for another changes this; its target's change the stat below
    try:
        st = path.stat()
    except OSError:
        st = lst
    return (lst.st_ino, lst.st_mtime_ns, st.st_mode, st.st_ino, st.st_mtime_ns, st.st_size)


class HeadFolder:
    """``root/heads/``: thread-safe; every method may block (call it off the event loop)."""

    def __init__(self, root: Path, spec: BackboneSpec, limits: PrefixLimits) -> None:
        self.root = Path(root)
        self.folder = self.root / HEADS_DIR
        self.spec = spec
        self.limits = limits
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}

    def source(self, filename: str) -> str:
        return f"{HEADS_DIR}/{filename}"

    def rescan(self) -> None:
        """Reload the files that changed, drop the ones that are gone."""
        with self._lock:
            seen: set[str] = set()
            if self.folder.is_dir():
                for path in sorted(self.folder.iterdir()):
                    if is_candidate(path):
                        seen.add(path.name)
                        self._update(path)
            for gone in self._entries.keys() - seen:
                log.info("head file %s removed", self.source(gone))
                del self._entries[gone]

    def _load(self, path: Path) -> TaskHead:
        source = self.source(path.name)
        if path.suffix in PICKLE_SUFFIXES:
            raise InvalidHeadFile(
                f"{source}: pickle-based files are never loaded; write heads as safetensors"
            )
        if path.suffix != NATIVE_SUFFIX:
            raise InvalidHeadFile(f"{source}: not a head file (expected NAME{NATIVE_SUFFIX})")
        try:
            data = read_limited(path, self.limits.max_file_bytes, source, root=self.root).data
        except InvalidPrefixFile as exc:
            raise InvalidHeadFile(exc.message) from None
        return parse_head(
            path.name[: -len(NATIVE_SUFFIX)], data, self.spec, source=source, limits=self.limits
        )

    def _update(self, path: Path) -> None:
        old = self._entries.get(path.name)
        last_good = old.last_good if old else None
        try:
            sig = _signature(path)
        except OSError as exc:
            reason = f"{self.source(path.name)}: cannot read: {exc.strerror or exc}"
            self._entries[path.name] = _Entry((), error=reason, last_good=last_good)
            return
        if old is not None and old.signature == sig:
            return
        try:
            head = self._load(path)
        except Exception as exc:  # noqa: BLE001 - any failure is this file's rejection, never the scan's
            reason = rejection_reason(exc, self.source(path.name))
            log.warning("rejected head file: %s", reason)
            self._entries[path.name] = _Entry(sig, error=reason, last_good=last_good)
            return
        if last_good is not None and last_good.digest == head.digest:
            head = last_good  # the same content: keep the object (and its loaded_at)
        else:
            log.info("loaded head %s (%s) from %s", head.name, head.digest[:12], head.source)
        self._entries[path.name] = _Entry(sig, head, last_good=head)

    def collect(self) -> HeadScan:
        with self._lock:
            heads: dict[str, TaskHead] = {}
            stale: set[str] = set()
            rejected: list[Rejected] = []
            if self.folder.exists() and not self.folder.is_dir():
                rejected.append(Rejected(HEADS_DIR, f"{HEADS_DIR}: not a folder; no head is loaded"))
            for filename in sorted(self._entries):
                entry = self._entries[filename]
                if entry.error is not None:
                    rejected.append(Rejected(self.source(filename), entry.error))
                serving = entry.head or entry.last_good
                if serving is not None:
                    heads[serving.name] = serving
                    if entry.head is None:
                        stale.add(serving.name)
            return HeadScan(heads, frozenset(stale), tuple(rejected))

    def write(self, name: str, data: bytes) -> tuple[TaskHead, bool]:
        """Validate head bytes, write them atomically as ``heads/NAME.safetensors``: (head, created)."""
        filename = f"{name}{NATIVE_SUFFIX}"
        head = parse_head(name, data, self.spec, source=self.source(filename), limits=self.limits)
        with self._lock:
            path = self.folder / filename
            created = not path.exists()
            atomic_write(path, data)
            self._update(path)
        return head, created

    def remove(self, name: str) -> None:
        """Delete ``heads/NAME.safetensors`` (one atomic unlink); unknown -> :class:`HeadNotFound`."""
        filename = f"{name}{NATIVE_SUFFIX}"
        with self._lock:
            if filename not in self._entries:
                known = shown_list(sorted(self.collect().heads), quoted=False) or "none"
                raise HeadNotFound(f"unknown head {shown(name)}; known heads: {known}")
            os.unlink(self.folder / filename)
            del self._entries[filename]
