"""Scan a prefix folder: every prefix entry validated, every rejected one with its reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from service.engine.backbone import BackboneSpec
from service.engine.prefix import LoadedPrefix
from service.errors import InvalidPrefixFile
from service.registry.formats import load_prefix
from service.registry.state import STATE_FILE

log = logging.getLogger(__name__)

# Not prefixes and not errors: documentation, the state file, temp files of atomic writes.
IGNORED_SUFFIXES = (".md", ".txt", ".tmp", ".json", ".lock")


@dataclass(frozen=True)
class Rejected:
    source: str
    reason: str


def is_candidate(path: Path) -> bool:
    """Whether a folder entry is meant as a prefix (so a failure to load it is reported)."""
    name = path.name
    return not (
        name.startswith((".", "_"))
        or name == STATE_FILE
        or (path.is_file() and name.endswith(IGNORED_SUFFIXES))
    )


def scan_folder(
    folder: Path, spec: BackboneSpec, *, max_prefix_len: int, max_bytes: int
) -> tuple[list[LoadedPrefix], list[Rejected]]:
    loaded: list[LoadedPrefix] = []
    rejected: list[Rejected] = []
    if not folder.is_dir():
        return loaded, [Rejected(str(folder), f"{folder}: prefix folder does not exist")]
    for path in sorted(folder.iterdir()):
        if not is_candidate(path):
            continue
        try:
            loaded.append(load_prefix(path, spec, max_prefix_len=max_prefix_len, max_bytes=max_bytes))
        except InvalidPrefixFile as exc:
            log.warning("rejected prefix file: %s", exc.message)
            rejected.append(Rejected(path.name, exc.message))
        except OSError as exc:  # vanished or unreadable between listing and reading
            rejected.append(Rejected(path.name, f"{path.name}: cannot read: {exc.strerror or exc}"))
    return loaded, rejected
