"""The registry state file: which prefixes are disabled. Written atomically, read on every change.

Replicas sharing the folder converge on it: each one's watcher sees the rename and re-reads it. A
broken file (hand-edited, wrong types) never stops the registry: everything stays enabled and the
file is listed under ``rejected`` with the reason until a PATCH rewrites it.
"""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

from service.registry.names import STATE_FILE
from service.registry.reading import read_limited
from service.registry.writer import atomic_write

__all__ = ["STATE_FILE", "read_disabled", "read_state", "write_disabled"]

MAX_STATE_BYTES = 1024 * 1024
log = logging.getLogger(__name__)


def read_state(folder: Path) -> tuple[frozenset[str], str | None]:
    """(disabled names, the reason the file was ignored or None)."""
    path = folder / STATE_FILE
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return frozenset(), None  # missing (or not a file: a write will fail with a clear 503)
        raw = read_limited(path, MAX_STATE_BYTES, STATE_FILE, root=folder).data
        data = json.loads(raw)
    except FileNotFoundError:
        return frozenset(), None
    except Exception as exc:  # noqa: BLE001 - any broken state file is reported, never raised
        reason = getattr(exc, "message", None) or f"{STATE_FILE}: unreadable: {exc}"
        return frozenset(), _ignored(path, reason)
    disabled = data.get("disabled", []) if isinstance(data, dict) else None
    if not isinstance(disabled, list) or not all(isinstance(n, str) for n in disabled):
        got = json.dumps(disabled if isinstance(data, dict) else data)[:80]
        return frozenset(), _ignored(path, f"{STATE_FILE}: 'disabled' must be a list of names, got {got}")
    return frozenset(disabled), None


def _ignored(path: Path, reason: str) -> str:
    reason = f"{reason}; every prefix stays enabled until the file is fixed or a PATCH rewrites it"
    log.error("ignoring state file %s: %s", path, reason)
    return reason


def read_disabled(folder: Path) -> frozenset[str]:
    return read_state(folder)[0]


def write_disabled(folder: Path, disabled: frozenset[str] | set[str]) -> None:
    body = json.dumps({"version": 1, "disabled": sorted(disabled)}, indent=2) + "\n"
    atomic_write(folder / STATE_FILE, body.encode())
