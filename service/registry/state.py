"""The registry state: which prefixes and which task heads are disabled (``state.json``), and the lock
that guards changes. A file without ``disabled_heads`` (written before heads existed) reads as no head
disabled.

Both live in the state folder (the ``state_dir`` setting; default: the prefix folder itself, so that
replicas sharing the folder share the state; ``prefixes/.gitignore`` keeps them out of git). The file
is written atomically with a ``content_sha256`` of its content, and read by the rule of
:mod:`service.registry.reading` (a regular file, never through a link, never blocking).

A broken file (not a regular file, unreadable, not JSON, wrong types, checksum mismatch) is reported,
never taken as "nothing is disabled": the registry keeps its last good state, and at a cold start
disables every prefix until the file is fixed or a PATCH rewrites it (see registry.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import InvalidPrefixFile, PrefixStoreUnwritable
from service.registry.names import STATE_FILE, STATE_LOCK
from service.registry.reading import open_regular, read_limited
from service.registry.writer import atomic_write

__all__ = ["STATE_FILE", "STATE_LOCK", "StateRead", "StateStore", "read_disabled", "state_checksum"]

MAX_STATE_BYTES = 1024 * 1024
# How long a change waits for another process (a replica) holding the lock: a change holds it for
# milliseconds, so this long means that process is stuck; the change is refused with a 503.
LOCK_WAIT_S = 5.0
_LOCK_POLL_S = 0.01


@dataclass(frozen=True)
class StateRead:
    """``disabled`` / ``disabled_heads``: the prefix and head names the file disables, both None when
    the file is broken (``error`` says why). A missing file is a good, empty state."""

    disabled: frozenset[str] | None
    error: str | None = None
    disabled_heads: frozenset[str] | None = frozenset()


def state_checksum(doc: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of every field but ``content_sha256`` itself."""
    body = {k: v for k, v in doc.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class StateStore:
    """``state.json`` and ``.state.lock`` in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / STATE_FILE
        self.lock_path = self.folder / STATE_LOCK

    def read(self) -> StateRead:
        try:
            raw = read_limited(self.path, MAX_STATE_BYTES, STATE_FILE).data
        except FileNotFoundError:
            return StateRead(frozenset())
        except InvalidPrefixFile as exc:
            return StateRead(None, exc.message, None)
        except OSError as exc:
            return StateRead(None, f"{STATE_FILE}: unreadable: {exc.strerror or exc}", None)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            return StateRead(None, f"{STATE_FILE}: unreadable: not JSON: {str(exc)[:120]}", None)
        lists = []
        for key in ("disabled", "disabled_heads"):
            names = data.get(key, []) if isinstance(data, dict) else None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                got = json.dumps(names if isinstance(data, dict) else data)[:80]
                return StateRead(None, f"{STATE_FILE}: {key!r} must be a list of names, got {got}", None)
            lists.append(frozenset(names))
        checksum = data.get("content_sha256")
        if checksum is not None and checksum != state_checksum(data):
            return StateRead(
                None, f"{STATE_FILE}: content_sha256 does not match the content (altered or torn)", None
            )
        return StateRead(lists[0], None, lists[1])

    def write(self, disabled: Collection[str], disabled_heads: Collection[str]) -> None:
        doc: dict[str, Any] = {
            "version": 1,
            "disabled": sorted(disabled),
            "disabled_heads": sorted(disabled_heads),
        }
        doc["content_sha256"] = state_checksum(doc)
        atomic_write(self.path, (json.dumps(doc, indent=2) + "\n").encode())

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state lock (``flock``), shared with every replica using this folder. Never blocks
        for long: a lock that is not a regular file, or one held past :data:`LOCK_WAIT_S`, is a 503
        saying so. Take it before the registry's own lock, so that waiting here never stalls loading."""
        where = f"cannot lock the prefix state ({self.lock_path})"
        try:
            fd = open_regular(self.lock_path, STATE_LOCK, os.O_RDWR, create=True)
        except InvalidPrefixFile as exc:
            raise PrefixStoreUnwritable(
                f"{where}: {exc.message}; remove it (the service recreates it); nothing was changed"
            ) from None
        except OSError as exc:
            raise PrefixStoreUnwritable(f"{where}: {exc.strerror or exc}; nothing was changed") from None
        try:
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise PrefixStoreUnwritable(
                            f"{where}: held by another process for over {LOCK_WAIT_S:g} s; nothing was "
                            "changed, try again"
                        ) from None
                    time.sleep(_LOCK_POLL_S)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def read_disabled(folder: Path) -> frozenset[str]:
    """The names ``folder``'s state file disables (empty when it is missing or broken)."""
    return StateStore(folder).read().disabled or frozenset()
