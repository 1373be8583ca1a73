"""The registry state file: which prefixes and which heads are disabled. Written atomically, read on
every change. A file without ``disabled_heads`` (written before heads existed) reads as no head disabled.

Replicas sharing the folder converge on it: each one's watcher sees the rename and re-reads it. A
broken file (hand-edited, wrong types) never stops the registry: everything stays enabled and the
file is listed under ``rejected`` with the reason until a PATCH rewrites it.
"""

from __future__ import annotations

import json
import logging
import stat
from dataclasses import dataclass
from pathlib import Path

from service.registry.names import STATE_FILE
from service.registry.reading import read_limited
from service.registry.writer import atomic_write

__all__ = ["STATE_FILE", "RegistryState", "read_disabled", "read_state", "write_state"]

MAX_STATE_BYTES = 1024 * 1024
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryState:
    """What the state file records: the disabled prefixes and the disabled heads."""

    disabled: frozenset[str] = frozenset()
    disabled_heads: frozenset[str] = frozenset()


def read_state(folder: Path) -> tuple[RegistryState, str | None]:
    """(the state, the reason the file was ignored or None)."""
    path = folder / STATE_FILE
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return RegistryState(), None  # missing (or not a file: a write will fail with a clear 503)
        raw = read_limited(path, MAX_STATE_BYTES, STATE_FILE, root=folder).data
        data = json.loads(raw)
    except FileNotFoundError:
        return RegistryState(), None
    except Exception as exc:  # noqa: BLE001 - any broken state file is reported, never raised
        reason = getattr(exc, "message", None) or f"{STATE_FILE}: unreadable: {exc}"
        return RegistryState(), _ignored(path, reason)
    lists = []
    for key in ("disabled", "disabled_heads"):
        names = data.get(key, []) if isinstance(data, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            got = json.dumps(names if isinstance(data, dict) else data)[:80]
            return RegistryState(), _ignored(
                path, f"{STATE_FILE}: {key!r} must be a list of names, got {got}"
            )
        lists.append(frozenset(names))
    return RegistryState(*lists), None


def _ignored(path: Path, reason: str) -> str:
    reason = f"{reason}; every prefix and head stays enabled until the file is fixed or a PATCH rewrites it"
    log.error("ignoring state file %s: %s", path, reason)
    return reason


def read_disabled(folder: Path) -> frozenset[str]:
    return read_state(folder)[0].disabled


def write_state(folder: Path, state: RegistryState) -> None:
    body = {"version": 1, "disabled": sorted(state.disabled), "disabled_heads": sorted(state.disabled_heads)}
    atomic_write(folder / STATE_FILE, (json.dumps(body, indent=2) + "\n").encode())
