"""What a prefix folder entry is called and which entries are prefixes at all."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from service.engine.prefix import BASE_NAME
from service.errors import InvalidPrefixFile, shown

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
NATIVE_SUFFIX = ".safetensors"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
STATE_FILE = "state.json"
# Held (flock) while a change reads, changes and writes the state file: replicas sharing the folder
# must not lose each other's changes. A dot file: ignored by the folder scan and the watcher.
STATE_LOCK = ".state.lock"
# The task heads' sub-folder (service/heads/): not a prefix, scanned by the registry beside the prefixes.
HEADS_DIR = "heads"
# Not prefixes and not errors: documentation, the state file, temp files of atomic writes.
IGNORED_SUFFIXES = (".md", ".txt", ".tmp", ".json", ".lock")


def prefix_name(path: Path) -> str | None:
    """The prefix name a folder entry would have, or None for files that are not prefixes."""
    if path.is_dir():
        return path.name
    if path.suffix == NATIVE_SUFFIX:
        return path.name[: -len(NATIVE_SUFFIX)]
    return None


def check_name(name: str, source: str) -> None:
    if name == BASE_NAME:
        raise InvalidPrefixFile(f"{source}: {BASE_NAME} is a reserved built-in name")
    if not NAME_RE.fullmatch(name):
        raise InvalidPrefixFile(
            f"{source}: bad prefix name {shown(name)}: must match [a-z0-9][a-z0-9_.-]{{0,63}}"
        )


def is_candidate(path: Path) -> bool:
    """Whether a folder entry is meant as a prefix (so a failure to load it is reported).

    Decided from the name and ``lstat`` only: nothing is followed or opened here.
    """
    name = path.name
    if name.startswith((".", "_")) or name == STATE_FILE:
        return False
    try:
        is_dir = stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return True  # vanished or unreadable: reported by the loader
    if is_dir and name == HEADS_DIR:
        return False  # the heads' folder (service/heads/folder.py reads it)
    return is_dir or not name.endswith(IGNORED_SUFFIXES)
