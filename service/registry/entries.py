"""What the registry knows about one folder entry, and the rule that (re)loads it.

- An entry is re-read only when its signature (lstat of the entry and of what it holds) changed, or
  when a pending look is due.
- A file that changed while it was read is pending: looked at again a settle window later.
- A verified file (``content_sha256`` matched) loads at once. A native file without a checksum is
  refused while ``require_checksum`` is on. Any other unverified file (a PEFT folder, or a native one
  with the setting off) loads only once two reads ``settle_s`` apart hash equal; it is then listed as
  ``verified: false``.
- A bad entry keeps its last good version (``last_good``) serving.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.engine.backbone import BackboneSpec
from service.engine.prefix import LoadedPrefix
from service.errors import InvalidPrefixFile, PrefixPending
from service.registry.limits import PrefixLimits
from service.registry.loader import load_prefix, rejection_reason
from service.registry.names import PEFT_CONFIG, PEFT_WEIGHTS
from service.registry.native import is_verified
from service.registry.reading import check_inside

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One folder entry (a file or a PEFT folder) as last looked at."""

    signature: tuple[Any, ...]
    prefix: LoadedPrefix | None = None  # the entry's current content, when valid
    error: str | None = None
    last_good: LoadedPrefix | None = None  # served while the entry is bad
    first_read: str | None = None  # digest of an unverified read awaiting its confirming read
    first_read_at: float = 0.0  # monotonic time of that read
    settle_at: float | None = None  # look again at this monotonic time

    @property
    def serving(self) -> LoadedPrefix | None:
        return self.prefix or self.last_good


def _stat_sig(name: str, st: os.stat_result) -> tuple[Any, ...]:
    return (name, st.st_mode, st.st_mtime_ns, st.st_size, st.st_ino)


def signature(path: Path, root: Path) -> tuple[Any, ...]:
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


def load_entry(
    path: Path, old: Entry | None, spec: BackboneSpec, limits: PrefixLimits, root: Path, now: float
) -> Entry:
    """The entry at ``path`` now (``old``: what was known before; ``now``: a monotonic time). Every
    failure becomes the entry's rejection: loading one entry never raises."""
    last_good = old.last_good if old else None
    try:
        sig = signature(path, root)
    except OSError as exc:  # vanished or unreadable between listing and reading
        return Entry(("unreadable",), error=rejection_reason(exc, path.name), last_good=last_good)
    if old is not None and old.signature == sig and (old.settle_at is None or old.settle_at > now):
        return old
    settle = limits.settle_s
    try:
        prefix = load_prefix(path, spec, limits, root=root)
    except PrefixPending as exc:
        return Entry(sig, error=exc.message, last_good=last_good, settle_at=now + settle)
    except Exception as exc:  # noqa: BLE001 - any failure is this entry's rejection, never the scan's
        reason = rejection_reason(exc, path.name)
        log.warning("rejected prefix file: %s", reason)
        return Entry(sig, error=reason, last_good=last_good)
    if not is_verified(prefix):
        if prefix.kind == "native" and limits.require_checksum:
            reason = (
                f"{path.name}: no content_sha256, and require_checksum is on (PREFIX_EMBED_REQUIRE_CHECKSUM): "
                f"only a checksum proves a file whole. Write it with native_bytes or `train`, or upload it "
                f"with PUT /prefixes/{prefix.name} (which records one); or turn the setting off to load "
                f"files without one after two equal reads {settle:g} s apart"
            )
            log.warning("rejected prefix file: %s", reason)
            return Entry(sig, error=reason, last_good=last_good)
        confirmed = old is not None and old.first_read == prefix.digest
        first_at = old.first_read_at if confirmed and old is not None else now
        if settle > 0 and not (confirmed and now - first_at >= settle):
            reason = (
                f"{path.name}: pending: no content_sha256 to prove it whole; loaded (as verified: false) "
                f"once two reads {settle:g} s apart have the same content"
            )
            return Entry(sig, None, reason, last_good, prefix.digest, first_at, first_at + settle)
    if last_good is not None and last_good.digest == prefix.digest:
        prefix = last_good  # same content (touched, or re-written identically): keep loaded_at
    else:
        log.info("loaded prefix %s (%s) from %s", prefix.name, prefix.digest[:12], path.name)
    return Entry(sig, prefix, last_good=prefix)
