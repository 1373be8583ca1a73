"""The prefix registry: owns the prefix folder and publishes immutable snapshots of it.

Every change (initial scan, watcher event, PATCH, PUT) builds a new :class:`Snapshot` off the event
loop and publishes it with one reference assignment, so a request that took a snapshot keeps a
consistent bank, enabled set and digests to its end. A prefix whose file turns bad (a torn copy, a
corrupt upload) keeps serving its previous good version; the bad file is listed in ``rejected``.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.engine.backbone import BackboneSpec
from service.engine.bank import PrefixBank
from service.engine.prefix import BASE_NAME, base_prefix
from service.errors import (
    InvalidInput,
    InvalidPrefixFile,
    PrefixConflict,
    PrefixNotFound,
    PrefixStoreUnwritable,
)
from service.registry.folder import Rejected, is_candidate
from service.registry.formats import (
    NATIVE_SUFFIX,
    LoadedPrefix,
    atomic_write,
    load_prefix,
    parse_native,
)
from service.registry.state import read_disabled, write_disabled

log = logging.getLogger(__name__)

# Held (flock) while a PATCH reads, changes and writes the state file: replicas sharing the folder
# must not lose each other's changes. A dot file: ignored by the folder scan and the watcher.
STATE_LOCK = ".state.lock"


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One published view of the prefix folder. Never mutated: a change publishes a new one."""

    bank: PrefixBank
    enabled: frozenset[str]
    rejected: tuple[Rejected, ...]
    stale: frozenset[str]  # prefixes serving a previous good version (their file is rejected now)
    loaded_at: float
    version: int  # publish counter of this process, +1 on every change

    def enabled_names(self) -> list[str]:
        return [n for n in self.bank.names if n in self.enabled]


@dataclass
class _Entry:
    """What the registry knows about one folder entry (a file or a PEFT folder)."""

    signature: tuple[Any, ...]
    prefix: LoadedPrefix | None = None  # the entry's current content, when valid
    error: str | None = None
    last_good: LoadedPrefix | None = None  # served while the entry is bad


@dataclass(frozen=True)
class PutResult:
    prefix: LoadedPrefix
    created: bool


@dataclass
class _Scan:
    prefixes: dict[str, LoadedPrefix] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    stale: set[str] = field(default_factory=set)


def _signature(path: Path) -> tuple[Any, ...]:
    """Changes whenever an entry's content may have changed (atomic replace gives a new inode)."""
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    sig: list[Any] = []
    for f in files:
        st = f.stat()
        sig.append((f.name, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(sig)


class PrefixRegistry:
    """The prefix folder of one backbone. Thread-safe; every method may block (call off the loop)."""

    def __init__(self, folder: Path, spec: BackboneSpec, *, max_prefix_len: int, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.max_prefix_len = max_prefix_len
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._shape = (spec.num_layers, spec.num_heads, spec.head_dim)
        self._base = base_prefix(spec)  # the built-in member of every bank (no file)
        self._snapshot = Snapshot(
            PrefixBank.build([], self._shape, base=self._base), frozenset(), (), frozenset(), time.time(), 0
        )

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot: take it once per request and use only it."""
        return self._snapshot

    # --- loading ---------------------------------------------------------------------------------

    def load(self) -> Snapshot:
        """Initial scan of the folder (creating it when missing), then publish."""
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            return self.refresh()

    def refresh(self) -> Snapshot:
        """Re-scan: reload entries whose files changed, drop removed ones, re-read the state file."""
        with self._lock:
            self._rescan()
            return self._publish(self._collect())

    def _rescan(self) -> None:
        seen: set[str] = set()
        for path in sorted(self.folder.iterdir()) if self.folder.is_dir() else []:
            if not is_candidate(path):
                continue
            seen.add(path.name)
            self._update_entry(path)
        for gone in self._entries.keys() - seen:
            log.info("prefix entry %s removed", gone)
            del self._entries[gone]

    def _update_entry(self, path: Path) -> None:
        old = self._entries.get(path.name)
        try:
            sig = _signature(path)
        except OSError as exc:  # vanished or unreadable between listing and reading
            sig, reason = ("unreadable",), f"{path.name}: cannot read: {exc.strerror or exc}"
            self._entries[path.name] = _Entry(sig, error=reason, last_good=old.last_good if old else None)
            return
        if old is not None and old.signature == sig:
            return
        last_good = old.last_good if old else None
        try:
            prefix = load_prefix(
                path, self.spec, max_prefix_len=self.max_prefix_len, max_bytes=self.max_bytes
            )
        except (InvalidPrefixFile, OSError) as exc:
            reason = exc.message if isinstance(exc, InvalidPrefixFile) else f"{path.name}: cannot read: {exc}"
            log.warning("rejected prefix file: %s", reason)
            self._entries[path.name] = _Entry(sig, error=reason, last_good=last_good)
            return
        if last_good is not None and last_good.digest == prefix.digest:
            prefix = last_good  # same content (touched, or re-written identically): keep loaded_at
        else:
            log.info("loaded prefix %s (%s) from %s", prefix.name, prefix.digest[:12], path.name)
        self._entries[path.name] = _Entry(sig, prefix, last_good=prefix)

    def _collect(self) -> _Scan:
        scan = _Scan()
        for source in sorted(self._entries):
            entry = self._entries[source]
            serving = entry.prefix or entry.last_good
            if entry.error is not None:
                scan.rejected.append(Rejected(source, entry.error))
            if serving is None:
                continue
            if serving.name in scan.prefixes:
                other = scan.prefixes[serving.name].source
                scan.rejected.append(
                    Rejected(source, f"{source}: prefix name {serving.name!r} is already taken by {other}")
                )
                continue
            scan.prefixes[serving.name] = serving
            if entry.prefix is None:
                scan.stale.add(serving.name)
        return scan

    def _publish(self, scan: _Scan, disabled: frozenset[str] | None = None) -> Snapshot:
        old = self._snapshot
        if disabled is None:
            disabled = read_disabled(self.folder)
        members = {p.name: p.digest for p in scan.prefixes.values()}
        if {p.name: p.digest for p in old.bank.prefixes if not p.builtin} == members:
            bank = old.bank  # unchanged: keep the bank object, so encoders keep their device copy
        else:
            bank = PrefixBank.build(scan.prefixes.values(), self._shape, base=self._base)
        enabled = frozenset(bank.names) - (disabled - {BASE_NAME})  # base cannot be disabled
        rejected, stale = tuple(scan.rejected), frozenset(scan.stale)
        if bank is old.bank and enabled == old.enabled and rejected == old.rejected and stale == old.stale:
            return old
        self._snapshot = Snapshot(bank, enabled, rejected, stale, time.time(), old.version + 1)
        log.info(
            "published prefixes v%d: %d loaded, %d enabled, %d rejected",
            self._snapshot.version,
            len(bank),
            len(enabled),
            len(rejected),
        )
        return self._snapshot

    # --- changes from the API --------------------------------------------------------------------

    @contextmanager
    def _writable(self, what: str) -> Iterator[None]:
        """Turn a failed write into a clear 503 (e.g. the folder is mounted read-only)."""
        try:
            yield
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise PrefixStoreUnwritable(
                f"cannot {what}: prefix folder {self.folder} is not writable ({reason}); nothing was changed"
            ) from exc

    @contextmanager
    def _state_lock(self) -> Iterator[None]:
        with self._lock, (self.folder / STATE_LOCK).open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def apply_patch(self, patch: object) -> Snapshot:
        """Apply a JSON merge patch ``{name: {"enabled": bool}}``: all of it or nothing, persisted."""
        changes = _parse_patch(patch)
        with self._writable("persist the prefix state"), self._state_lock():
            self._rescan()  # a prefix dropped in a moment ago is known, even before the watcher fires
            scan = self._collect()
            known = sorted(scan.prefixes)
            unknown = [n for n in changes if n not in known]
            if unknown:
                raise PrefixNotFound(
                    f"unknown prefix(es) {', '.join(map(repr, unknown))}; "
                    f"known prefixes: {', '.join(known) or 'none'}"
                )
            # Read the file, not our copy: another replica may have changed it a moment ago.
            disabled = set(read_disabled(self.folder))
            for name, enabled in changes.items():
                if enabled:
                    disabled.discard(name)
                else:
                    disabled.add(name)
            write_disabled(self.folder, disabled)
            return self._publish(scan, frozenset(disabled))

    def put_prefix(self, name: str, data: bytes) -> PutResult:
        """Validate native prefix bytes, write them atomically as ``NAME.safetensors``, publish."""
        source = f"{name}{NATIVE_SUFFIX}"
        if len(data) > self.max_bytes:
            raise InvalidPrefixFile(f"{source}: {len(data)} bytes is over the {self.max_bytes}-byte limit")
        prefix = parse_native(name, data, self.spec, source=source, max_prefix_len=self.max_prefix_len)
        with self._lock:
            for entry_name, entry in self._entries.items():
                serving = entry.prefix or entry.last_good
                if entry_name != source and serving is not None and serving.name == name:
                    raise PrefixConflict(
                        f"prefix {name!r} is served from {entry_name}; remove that entry before uploading"
                    )
            created = not (self.folder / source).exists()
            with self._writable(f"write {source}"):
                atomic_write(self.folder / source, data)
            self._update_entry(self.folder / source)
            self._publish(self._collect())
            entry = self._entries[source]
        return PutResult(entry.prefix if entry.prefix is not None else prefix, created)


def _parse_patch(patch: object) -> dict[str, bool]:
    """``{name: {"enabled": true|false|null}}`` -> {name: enabled}; null resets to the default (on)."""
    if not isinstance(patch, Mapping):
        raise InvalidInput('a prefixes patch is a JSON object like {"sentiment": {"enabled": false}}')
    changes: dict[str, bool] = {}
    for name, body in patch.items():
        if body is None:
            raise InvalidInput(
                f"prefix {name!r}: null would delete it; remove its file from the prefix folder instead"
            )
        if not isinstance(body, Mapping):
            raise InvalidInput(f'prefix {name!r}: expected an object like {{"enabled": false}}')
        extra = sorted(set(body) - {"enabled"})
        if extra:
            raise InvalidInput(f"prefix {name!r}: only 'enabled' can be changed, not {', '.join(extra)}")
        enabled = body.get("enabled", True)
        if enabled is None:
            enabled = True
        if not isinstance(enabled, bool):
            raise InvalidInput(f"prefix {name!r}: 'enabled' must be true, false or null")
        changes[str(name)] = enabled
    return changes
