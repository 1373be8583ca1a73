"""The prefix registry: owns the prefix folder and publishes immutable snapshots of it.

Every change (initial scan, watcher event, PATCH, PUT, DELETE) builds a new :class:`Snapshot` off the
event loop and publishes it with one reference assignment, so a request that took a snapshot keeps a
consistent bank, enabled set and digests to its end. A prefix whose file turns bad (a torn copy, a
corrupt upload) keeps serving its previous good version; the bad file is listed in ``rejected``.

The state file (which prefixes are disabled) is never taken for more than it says: when it is broken
the registry keeps the last good state it read, and at a cold start (no good state read yet) it
disables every prefix until the file is fixed or a PATCH rewrites it. Starting with everything
disabled rather than refusing ``/ready`` keeps the admin routes up, so a PATCH can repair it; and a
prefix an operator disabled (say, for its data's licence) is never served because a file broke.

The task heads of ``heads/`` (service/heads/) are scanned with the prefixes and published in the same
snapshot, checked against its bank; the state file's ``disabled_heads`` lists the disabled ones.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from service.engine.backbone import BackboneSpec
from service.engine.bank import PrefixBank
from service.engine.pooling import pooling_label
from service.engine.prefix import BASE_NAME, LoadedPrefix, base_prefix
from service.errors import (
    HeadNotFound,
    InvalidPrefixFile,
    PrefixConflict,
    PrefixNotFound,
    PrefixStoreUnwritable,
    shown,
    shown_list,
)
from service.heads.folder import HeadFolder
from service.heads.head import TaskHead
from service.heads.table import HeadTable
from service.registry.calibration import base_file_name, read_base_calibration
from service.registry.entries import Entry, load_entry
from service.registry.limits import PrefixLimits
from service.registry.loader import Rejected
from service.registry.names import NATIVE_SUFFIX, STATE_FILE, is_candidate, prefix_name
from service.registry.native import parse_native
from service.registry.patch import parse_patch
from service.registry.served import MODELS_FILE, NONE, ServedModels, read_served_models
from service.registry.state import StateRead, StateStore
from service.registry.writer import atomic_write, remove_entry, remove_orphans, with_checksum

if TYPE_CHECKING:
    from service.config import Settings

log = logging.getLogger(__name__)


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
    disabled: frozenset[str] = frozenset()  # the names the state disables (with or without a file)
    state_error: str | None = None  # why the state file is not in force (None: it is, or it is absent)
    state_read: bool = True  # a good state was read since start (False: everything is disabled)
    heads: HeadTable = HeadTable()  # the task heads, checked against this bank (service/heads/)

    def enabled_names(self) -> list[str]:
        return [n for n in self.bank.names if n in self.enabled]

    def disabled_reason(self, name: str) -> str | None:
        """Why a loaded prefix is disabled (None when it is enabled)."""
        if name in self.enabled or name not in self.bank.names:
            return None
        if not self.state_read:
            return "the state file is broken and no good state was read since start, so every prefix starts disabled"
        return (
            "listed as disabled in the state file (by a PATCH, or by hand; a name stays listed when its file is "
            f'removed by hand and comes back); enable it with PATCH /prefixes/{name} {{"enabled": true}}'
        )


@dataclass(frozen=True)
class PutResult:
    prefix: LoadedPrefix
    created: bool


@dataclass(frozen=True)
class DeleteResult:
    name: str
    digest: str | None  # of the version that was serving (None: the entry never loaded)
    removed: tuple[str, ...]  # the folder entries removed
    was_enabled: bool


@dataclass
class _Scan:
    prefixes: dict[str, LoadedPrefix] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    stale: set[str] = field(default_factory=set)


class PrefixRegistry:
    """The prefix folder of one backbone. Thread-safe; every method may block (call off the loop).

    ``state_dir``: where ``state.json`` and its lock live (default: the prefix folder). ``clock``: a
    monotonic clock for settle windows (tests pass their own)."""

    def __init__(
        self,
        folder: Path,
        spec: BackboneSpec,
        limits: PrefixLimits | None = None,
        *,
        state_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        pooling: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.limits = limits or PrefixLimits()
        # The heads/ sub-folder, scanned with the prefixes; a head fitted on another pooling than the
        # server's (``pooling``) is unavailable.
        self.heads = HeadFolder(self.folder, spec, self.limits)
        self.pooling = pooling
        self._disabled_heads: frozenset[str] | None = None  # the last good state's heads (None: none yet)
        self.state = StateStore(Path(state_dir) if state_dir is not None else self.folder)
        self._clock = clock
        self._lock = threading.RLock()
        self._entries: dict[str, Entry] = {}
        self._disabled: frozenset[str] | None = None  # the last good state read (None: none yet)
        self._shape = (spec.num_layers, spec.num_heads, spec.head_dim)
        self._base = base_prefix(spec)  # the built-in member of every bank (no file)
        self._snapshot = Snapshot(
            PrefixBank.build([], self._shape, base=self._base), frozenset(), (), frozenset(), time.time(), 0
        )
        self._served_good: ServedModels | None = None  # the last models.json that parsed

    @classmethod
    def from_settings(cls, settings: Settings, spec: BackboneSpec) -> PrefixRegistry:
        """The registry of ``settings.prefix_dir`` as the server opens it (limits, state folder, the
        pooling its heads are checked against)."""
        pooling = pooling_label(settings.pooling, settings.pooling_layers)
        return cls(
            settings.prefix_dir, spec, settings.prefix_limits(), state_dir=settings.state_dir, pooling=pooling
        )

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
            if self.state.folder != self.folder:
                self.state.folder.mkdir(parents=True, exist_ok=True)
                remove_orphans(self.state.folder)
            return self.scan()

    def scan(self) -> Snapshot:
        """Re-scan like :meth:`refresh`, but wait (bounded) until every entry settled: for one-shot use
        (``embed``, ``bench``, ``method``) and start-up."""
        with self._lock:
            self._rescan()
            deadline = time.monotonic() + 2 * self.limits.settle_s + 0.5  # real time, whatever the clock
            while (due := self.pending_deadline()) is not None:
                wait = max(0.0, due - self._clock()) + 0.01
                if time.monotonic() + wait > deadline:
                    break
                time.sleep(wait)
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
        now = self._clock()
        for path in sorted(self.folder.iterdir()) if self.folder.is_dir() else []:
            if not is_candidate(path):
                continue
            seen.add(path.name)
            old = self._entries.get(path.name)
            self._entries[path.name] = load_entry(path, old, self.spec, self.limits, self.folder, now)
        for gone in self._entries.keys() - seen:
            log.info("prefix entry %s removed", gone)
            del self._entries[gone]
        self.heads.rescan()

    def _collect(self) -> _Scan:
        scan = _Scan()
        for source in sorted(self._entries):
            entry = self._entries[source]
            serving = entry.serving
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

    def _state_in_force(self, scan: _Scan) -> tuple[StateRead, str | None]:
        """The disabled prefixes and heads to apply now, and why the state file is not in force (None:
        it is). A broken file keeps the last good state; at a cold start every prefix and head is off."""
        read = self.state.read()
        if read.disabled is not None:
            self._disabled, self._disabled_heads = read.disabled, read.disabled_heads
            return read, None
        if self._disabled is not None:
            kept = f"keeping the last good state ({len(self._disabled)} disabled)"
            reason = f"{read.error}; {kept} until the file is fixed or a PATCH rewrites it"
            return StateRead(self._disabled, None, self._disabled_heads), reason
        reason = (
            f"{read.error}; no good state was read since start, so every prefix is disabled until the "
            "file is fixed or a PATCH rewrites it"
        )
        return StateRead(frozenset(scan.prefixes), None, frozenset(self.heads.collect().heads)), reason

    def _publish(self, scan: _Scan, state: StateRead | None = None) -> Snapshot:
        old = self._snapshot
        state_error = None
        if state is None:
            state, state_error = self._state_in_force(scan)
            if state_error is not None:
                scan.rejected.append(Rejected(STATE_FILE, state_error))
                if state_error != old.state_error:
                    log.error("state file %s not in force: %s", self.state.path, state_error)
        disabled = state.disabled or frozenset()
        served = self._read_served(scan)
        base = self._calibrated_base(scan)
        members = {p.name: p.digest for p in scan.prefixes.values()}
        same_files = {p.name: p.digest for p in old.bank.prefixes if not p.builtin} == members
        if same_files and old.bank.prefixes[0] is base:
            bank = old.bank  # unchanged: keep the bank object, so encoders keep their device copy
        else:
            bank = PrefixBank.build(scan.prefixes.values(), self._shape, base=base)
        enabled = frozenset(bank.names) - (disabled - {BASE_NAME})  # base cannot be disabled
        rejected, stale = tuple(scan.rejected), frozenset(scan.stale)
        state_read = self._disabled is not None or state_error is None
        heads = HeadTable.build(self.heads.collect(), bank, enabled, state.disabled_heads or (), self.pooling)
        if (
            bank is old.bank
            and (enabled, rejected, stale, disabled) == (old.enabled, old.rejected, old.stale, old.disabled)
            and (served, state_error, state_read, heads)
            == (old.served, old.state_error, old.state_read, old.heads)
        ):
            return old
        snap = Snapshot(
            bank,
            enabled,
            rejected,
            stale,
            time.time(),
            old.version + 1,
            served,
            disabled,
            state_error,
            state_read,
            heads,
        )
        for name in sorted((set(bank.names) - enabled) - (set(old.bank.names) - old.enabled)):
            log.info("prefix %s is disabled: %s", name, snap.disabled_reason(name))
        self._snapshot = snap
        log.info(
            "published prefixes v%d: %d loaded, %d enabled, %d rejected",
            snap.version,
            len(bank),
            len(enabled),
            len(rejected),
        )
        return snap

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

    def _current_state(self, scan: _Scan) -> tuple[set[str], set[str]]:
        """The state a change starts from (disabled prefixes, disabled heads): the file when it is good
        (another replica may have changed it a moment ago), else what is in force (the last good state,
        or everything at a cold start)."""
        read = self.state.read()
        if read.disabled is not None:
            return set(read.disabled), set(read.disabled_heads or ())
        if self._disabled is not None:
            return set(self._disabled), set(self._disabled_heads or ())
        return set(scan.prefixes), set(self.heads.collect().heads)

    def _write_state(self, scan: _Scan, disabled: set[str], disabled_heads: set[str]) -> Snapshot:
        self.state.write(disabled, disabled_heads)
        self._disabled, self._disabled_heads = frozenset(disabled), frozenset(disabled_heads)
        return self._publish(scan, StateRead(self._disabled, None, self._disabled_heads))

    def apply_patch(self, patch: object) -> Snapshot:
        """Apply a JSON merge patch ``{name: {"enabled": bool}}``: all of it or nothing, persisted."""
        return self._patch_state("prefix", parse_patch(patch))

    def apply_head_patch(self, patch: object) -> Snapshot:
        """The same for the task heads (``disabled_heads`` of the same state file)."""
        return self._patch_state("head", parse_patch(patch, "head"))

    def _patch_state(self, kind: Literal["prefix", "head"], changes: dict[str, bool]) -> Snapshot:
        # The state lock first: waiting for another replica never holds up loading in this one.
        with self.state.locked(), self._lock, self._writable(f"persist the {kind} state"):
            self._rescan()  # a file dropped in a moment ago is known, even before the watcher fires
            scan = self._collect()
            known = sorted(scan.prefixes) if kind == "prefix" else sorted(self.heads.collect().heads)
            unknown = [n for n in changes if n not in known]
            if unknown:
                error: type[PrefixNotFound | HeadNotFound] = (
                    PrefixNotFound if kind == "prefix" else HeadNotFound
                )
                which, plural = ("prefix(es)", "prefixes") if kind == "prefix" else ("head(s)", "heads")
                raise error(
                    f"unknown {which} {shown_list(unknown)}; "
                    f"known {plural}: {shown_list(known, quoted=False) or 'none'}"
                )
            disabled, disabled_heads = self._current_state(scan)
            target = disabled if kind == "prefix" else disabled_heads
            for name, enabled in changes.items():
                if enabled:
                    target.discard(name)
                else:
                    target.add(name)
            return self._write_state(scan, disabled, disabled_heads)

    def put_prefix(self, name: str, data: bytes) -> PutResult:
        """Validate native prefix bytes, write them atomically as ``NAME.safetensors`` (with a
        ``content_sha256`` recorded when the upload has none), publish."""
        source = f"{name}{NATIVE_SUFFIX}"
        # Validated in full (values, metadata, checksum) before anything is written.
        prefix = parse_native(name, data, self.spec, source=source, limits=self.limits)
        data = with_checksum(data)
        with self._lock:
            for entry_name, entry in self._entries.items():
                serving = entry.serving
                if entry_name != source and serving is not None and serving.name == name:
                    raise PrefixConflict(
                        f"prefix {name!r} is served from {entry_name}; remove that entry before uploading"
                    )
            created = not os.path.lexists(self.folder / source)
            with self._writable(f"write {source}"):
                atomic_write(self.folder / source, data)
            old = self._entries.get(source)
            entry = load_entry(self.folder / source, old, self.spec, self.limits, self.folder, self._clock())
            self._entries[source] = entry
            self._publish(self._collect())
        return PutResult(entry.prefix if entry.prefix is not None else prefix, created)

    def delete_prefix(self, name: str) -> DeleteResult:
        """Remove every folder entry of prefix ``name`` (its file, link or PEFT folder; also a rejected
        entry of that name), each in one atomic step; the name leaves the state's disabled list, so a
        later upload of that name starts enabled like any new prefix."""
        with self.state.locked(), self._lock, self._writable(f"delete prefix {shown(name)}"):
            self._rescan()
            sources = sorted(
                src
                for src, entry in self._entries.items()
                if (entry.serving is not None and entry.serving.name == name)
                or prefix_name(self.folder / src) == name
            )
            if not sources:
                known = shown_list(sorted(self._collect().prefixes), quoted=False) or "none"
                raise PrefixNotFound(f"no prefix {shown(name)} in the prefix folder; known prefixes: {known}")
            serving = next(
                (s for src in sources if (s := self._entries[src].serving) and s.name == name), None
            )
            was_enabled = name in self._snapshot.enabled
            for src in sources:
                remove_entry(self.folder / src)
                log.info("deleted prefix entry %s (prefix %s)", src, name)
            read = self.state.read()
            if read.disabled is not None and name in read.disabled:
                self.state.write(read.disabled - {name}, read.disabled_heads or ())
            self._rescan()
            self._publish(self._collect())
        return DeleteResult(name, serving.digest if serving else None, tuple(sources), was_enabled)

    def put_head(self, name: str, data: bytes) -> tuple[TaskHead, bool]:
        """Validate head bytes, write them atomically as ``heads/NAME.safetensors``, publish:
        (the head, whether it is new)."""
        with self._lock, self._writable(f"write heads/{name}{NATIVE_SUFFIX}"):
            result = self.heads.write(name, data)
            self._publish(self._collect())
        return result

    def delete_head(self, name: str) -> Snapshot:
        """Remove ``heads/NAME.safetensors`` (and its entry in ``disabled_heads``), publish."""
        with self.state.locked(), self._lock, self._writable(f"delete heads/{name}{NATIVE_SUFFIX}"):
            self._rescan()
            self.heads.remove(name)
            read = self.state.read()
            if read.disabled is not None and name in (read.disabled_heads or ()):
                self.state.write(read.disabled, (read.disabled_heads or frozenset()) - {name})
            return self._publish(self._collect())
