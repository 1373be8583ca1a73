"""Read one file of the prefix folder safely: only regular files inside the folder, never more than a limit.

- ``os.open`` with ``O_NONBLOCK`` and an ``fstat`` of the open descriptor: a FIFO, a device or a
  socket is refused without blocking (a FIFO opened for reading without O_NONBLOCK waits for a
  writer forever).
- The byte limit is enforced on the bytes actually read, never on ``stat`` (a symlink to /dev/zero
  says size 0).
- A path whose real location (symlinks followed) is outside the folder is refused.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from service.errors import InvalidPrefixFile

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


@dataclass(frozen=True)
class FileRead:
    data: bytes
    size: int
    mtime_ns: int


def file_kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def check_inside(path: Path, root: Path | None, source: str) -> None:
    """Refuse a path whose real location leaves ``root`` (a symlink pointing outside the folder)."""
    if root is None:
        return
    real, top = path.resolve(), root.resolve()
    if real != top and not real.is_relative_to(top):
        raise InvalidPrefixFile(
            f"{source}: symlink to {real} leaves the prefix folder; only files inside it are read"
        )


def read_limited(path: Path, limit: int, source: str, *, root: Path | None = None) -> FileRead:
    """The whole content of the regular file ``path``, refusing more than ``limit`` bytes."""
    check_inside(path, root, source)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise InvalidPrefixFile(f"{source}: {file_kind(before.st_mode)}, not a regular file; not read")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise InvalidPrefixFile(f"{source}: over the {limit}-byte limit (read stopped there)")
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise InvalidPrefixFile(
            f"{source}: pending: the file changed while it was read (a write in progress)"
        )
    return FileRead(b"".join(chunks), after.st_size, after.st_mtime_ns)
