"""The prefix registry: owns the prefix folder and publishes immutable snapshots of it.

Every change (initial scan, watcher event, PATCH, PUT) builds a new :class:`Snapshot` off the event
loop and publishes it with one reference assignment, so a request that took a snapshot keeps a
consistent bank, enabled set and digests to its end. A prefix whose file turns bad (a torn copy, a
corrupt upload) keeps serving its previous good version; the bad file is listed in ``rejected``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.engine.backbone import BackboneSpec
from service.engine.bank import PrefixBank
from service.engine.prefix import BASE_NAME, LoadedPrefix, base_prefix
from service.errors import (
    InvalidInput,
    InvalidPrefixFile,
    PrefixConflict,
    PrefixNotFound,
    PrefixStoreUnwritable,
)
from service.registry.calibration import base_file_name, read_base_calibration
from service.registry.limits import PrefixLimits
from service.registry.loader import Rejected, load_prefix
from service.registry.names import NATIVE_SUFFIX, PEFT_CONFIG, PEFT_WEIGHTS, STATE_FILE, is_candidate
from service.registry.native import parse_native
from service.registry.reading import check_inside
from service.registry.served import MODELS_FILE, NONE, ServedModels, read_served_models
from service.registry.state import read_disabled, read_state, write_disabled
from service.registry.writer import atomic_write, remove_orphans

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
    served: ServedModels = NONE  # the named prefix sets of models.json

    def enabled_names(self) -> list[str]:
        return [n for n in self.bank.names if n in self.enabled]


@dataclass
class _Entry:
    """What the registry knows about one folder entry (a file or a PEFT folder)."""

    signature: tuple[Any, ...]
    prefix: LoadedPrefix | None = None  # the entry's current content, when valid
    error: str | None = None
    last_good: LoadedPrefix | None = None  # served while the entry is bad
    first_seen: float = 0.0  # monotonic time this signature was first seen
    settle_at: float | None = None  # not settled yet: look again at this monotonic time


@dataclass(frozen=True)
class PutResult:
    prefix: LoadedPrefix
    created: bool


@dataclass
class _Scan:
    prefixes: dict[str, LoadedPrefix] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    stale: set[str] = field(default_factory=set)


def _stat_sig(name: str, st: os.stat_result) -> tuple[Any, ...]:
    return (name, st.st_mode, st.st_mtime_ns, st.st_size, st.st_ino)


def _signature(path: Path, root: Path) -> tuple[Any, ...]:
    """Changes whenever an entry's content may have changed (atomic replace gives a new inode).

    Built from ``lstat`` first: a symlink leaving the folder is never followed, and a PEFT folder
    contributes only its own two files (nothing below it is listed or watched).
    """
    lst = path.lstat()
    sig: list[Any] = [_stat_sig(path.name, lst)]
    if stat.S_ISLNK(lst.st_mode):
        try:
            check_inside(path, root, path.name)
        except InvalidPrefixFile:
            return (*sig, ("outside", str(path.resolve())))
        st = path.stat()
        sig.append(_stat_sig("->", st))
    else:
        st = lst
    if stat.S_ISDIR(st.st_mode):
        for name in (PEFT_CONFIG, PEFT_WEIGHTS):
            try:
                sig.append(_stat_sig(name, (path / name).stat()))
            except OSError:
                sig.append((name, None))
    return tuple(sig)


def _newest_mtime(sig: tuple[Any, ...]) -> float:
    return (
        max((s[2] for s in sig if isinstance(s, tuple) and len(s) == 5 and s[2] is not None), default=0) / 1e9
    )


class PrefixRegistry:
    """The prefix folder of one backbone. Thread-safe; every method may block (call off the loop)."""

    def __init__(self, folder: Path, spec: BackboneSpec, limits: PrefixLimits | None = None) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.limits = limits or PrefixLimits()
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._shape = (spec.num_layers, spec.num_heads, spec.head_dim)
        self._base = base_prefix(spec)  # the built-in member of every bank (no file)
        self._snapshot = Snapshot(
            PrefixBank.build([], self._shape, base=self._base), frozenset(), (), frozenset(), time.time(), 0
        )
        self._served_good: ServedModels | None = None  # the last models.json that parsed

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot: take it once per request and use only it."""
        return self._snapshot

    # --- loading ---------------------------------------------------------------------------------

    def load(self) -> Snapshot:
        """Initial scan of the folder (creating it when missing; removing orphaned temp files of
        killed writers), waiting (at most a settle window) for files still being written, then publish."""
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_orphans(self.folder)
            return self.scan()

    def scan(self) -> Snapshot:
        """Re-scan like :meth:`refresh`, but wait (bounded) until every entry settled: for one-shot use
        (``embed``, ``bench``, ``method``) and start-up."""
        with self._lock:
            self._rescan()
            deadline = time.monotonic() + 2 * self.limits.settle_s + 0.5
            while (due := self.pending_deadline()) is not None and due < deadline:
                time.sleep(max(0.0, due - time.monotonic()) + 0.01)
                self._rescan()
            return self._publish(self._collect())

    def pending_deadline(self) -> float | None:
        """The monotonic time at which an entry not yet settled should be looked at again (None: none)."""
        with self._lock:
            return min((e.settle_at for e in self._entries.values() if e.settle_at is not None), default=None)

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

    def _update_entry(self, path: Path, *, trusted: bool = False) -> None:
        """(Re)load one entry if it changed. Every error becomes this entry's rejection: scanning never
        stops. ``trusted``: we wrote the file ourselves a moment ago (PUT), so it is whole."""
        old = self._entries.get(path.name)
        last_good = old.last_good if old else None
        now = time.monotonic()
        try:
            sig = _signature(path, self.folder)
        except OSError as exc:  # vanished or unreadable between listing and reading
            reason = f"{path.name}: cannot read: {exc.strerror or exc}"
            self._entries[path.name] = _Entry(
                ("unreadable",), error=reason, last_good=last_good, first_seen=now
            )
            return
        if old is not None and old.signature == sig and (old.settle_at is None or old.settle_at > now):
            return
        first_seen = old.first_seen if old is not None and old.signature == sig else now
        settle = self.limits.settle_s
        # Unchanged long enough: by its mtime (a local clock), or since we first saw this signature
        # (immune to a network filesystem's clock skew).
        age = max(time.time() - _newest_mtime(sig), now - first_seen)
        settle_at = None if trusted or age >= settle else first_seen + settle
        try:
            prefix = load_prefix(path, self.spec, self.limits, root=self.folder)
        except Exception as exc:  # noqa: BLE001 - any failure is this entry's rejection, never the scan's
            if isinstance(exc, InvalidPrefixFile):
                reason = exc.message
            elif isinstance(exc, OSError):
                reason = f"{path.name}: cannot read: {exc.strerror or exc}"
            else:
                reason = f"{path.name}: cannot load: {type(exc).__name__}: {str(exc)[:200]}"
            if "pending:" in reason and settle_at is None:
                settle_at = now + settle
            log.warning("rejected prefix file: %s", reason)
            self._entries[path.name] = _Entry(sig, None, reason, last_good, first_seen, settle_at)
            return
        if settle_at is not None and "content_sha256" not in prefix.metadata:
            # Not proven whole by a checksum and changed a moment ago: maybe a copy in progress.
            reason = (
                f"{path.name}: pending: modified {max(age, 0.0):.1f} s ago; loaded once unchanged for "
                f"{settle:g} s (or proven whole by its content_sha256)"
            )
            self._entries[path.name] = _Entry(sig, None, reason, last_good, first_seen, settle_at)
            return
        if last_good is not None and last_good.digest == prefix.digest:
            prefix = last_good  # same content (touched, or re-written identically): keep loaded_at
        else:
            log.info("loaded prefix %s (%s) from %s", prefix.name, prefix.digest[:12], path.name)
        self._entries[path.name] = _Entry(sig, prefix, last_good=prefix, first_seen=first_seen)

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
            disabled, state_error = read_state(self.folder)
            if state_error is not None:
                scan.rejected.append(Rejected(STATE_FILE, state_error))
        served = self._read_served(scan)
        base = self._calibrated_base(scan)
        members = {p.name: p.digest for p in scan.prefixes.values()}
        if {p.name: p.digest for p in old.bank.prefixes if not p.builtin} == members and old.bank.prefixes[
            0
        ] is base:
            bank = old.bank  # unchanged: keep the bank object, so encoders keep their device copy
        else:
            bank = PrefixBank.build(scan.prefixes.values(), self._shape, base=base)
        enabled = frozenset(bank.names) - (disabled - {BASE_NAME})  # base cannot be disabled
        rejected, stale = tuple(scan.rejected), frozenset(scan.stale)
        if (
            bank is old.bank
            and enabled == old.enabled
            and rejected == old.rejected
            and stale == old.stale
            and served == old.served
        ):
            return old
        self._snapshot = Snapshot(bank, enabled, rejected, stale, time.time(), old.version + 1, served)
        log.info(
            "published prefixes v%d: %d loaded, %d enabled, %d rejected",
            self._snapshot.version,
            len(bank),
            len(enabled),
            len(rejected),
        )
        return self._snapshot

    def _calibrated_base(self, scan: _Scan) -> LoadedPrefix:
        """``base`` with the folder's base calibration file as of now (a new object only when it
        changed); a bad file is listed as rejected and the last good calibration kept."""
        try:
            calibration = read_base_calibration(self.folder, self.spec)
        except InvalidPrefixFile as exc:
            scan.rejected.append(Rejected(base_file_name(self.spec), exc.message))
            log.error("base calibration rejected: %s", exc.message)
            return self._base
        old = self._base.calibration
        if (old.digest if old else None) != (calibration.digest if calibration else None):
            self._base = base_prefix(self.spec, calibration)
        return self._base

    def _read_served(self, scan: _Scan) -> ServedModels:
        """models.json as of now; a broken file is listed as rejected and its last good version kept."""
        served = read_served_models(self.folder)
        if served.error is None:
            self._served_good = served
            return served
        scan.rejected.append(Rejected(MODELS_FILE, served.error))
        log.error("models file rejected: %s", served.error)
        return self._served_good if self._served_good is not None else served

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
        # Validated in full (values, metadata, checksum) before anything is written.
        prefix = parse_native(name, data, self.spec, source=source, limits=self.limits)
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
            self._update_entry(self.folder / source, trusted=True)
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
