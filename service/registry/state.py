"""The registry state file: which prefixes are disabled. Written atomically, read on every change.

Replicas sharing the folder converge on it: each one's watcher sees the rename and re-reads it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from service.registry.formats import atomic_write

STATE_FILE = "state.json"
log = logging.getLogger(__name__)


def read_disabled(folder: Path) -> frozenset[str]:
    path = folder / STATE_FILE
    if not path.is_file():
        return frozenset()
    try:
        data = json.loads(path.read_text())
        return frozenset(str(n) for n in data.get("disabled", []))
    except (OSError, ValueError, AttributeError) as exc:
        # A torn write cannot happen (atomic rename); a hand-edited broken file keeps everything enabled.
        log.error("ignoring unreadable state file %s: %s", path, exc)
        return frozenset()


def write_disabled(folder: Path, disabled: frozenset[str] | set[str]) -> None:
    body = json.dumps({"version": 1, "disabled": sorted(disabled)}, indent=2) + "\n"
    atomic_write(folder / STATE_FILE, body.encode())
