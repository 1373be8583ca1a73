"""Open the files of the prefix folder by one rule: prefix entries, the state file, its lock, heads.

- **Regular files only.** ``lstat`` first: a FIFO, a device, a socket or a directory is refused
  without being opened (a FIFO opened for reading waits for a writer forever; opening a device can
  have effects of its own).
- **Never through a link.** ``os.open`` with ``O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC``, then ``fstat``
  of the descriptor must show a regular file, the same one ``lstat`` saw (a swap in between is refused
  as pending). A prefix entry may be a symlink to a file *inside* the folder (served as that file): its
  real path is checked to be inside the folder and then opened by the same rule. The state file and
  its lock are never followed, wherever a link would lead.
- **Bounded.** The byte limit is enforced on the bytes actually read, never on ``stat`` (a symlink to
  /dev/zero says size 0).
- **Never blocks**, so a caller may hold the registry lock while it reads.

Writes go through :func:`service.registry.writer.atomic_write` (a fresh ``O_EXCL`` temp file, then a
rename, which replaces a link instead of writing through it).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from service.errors import InvalidPrefixFile, PrefixPending

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symlink",
}
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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


def open_regular(path: Path, source: str, flags: int = os.O_RDONLY, *, create: bool = False) -> int:
    """A descriptor of the regular file ``path`` itself (``create``: made with mode 0666 minus the
    umask when missing). A link, FIFO, device, socket or directory raises :class:`InvalidPrefixFile`
    naming ``source`` and what it is; the caller closes the descriptor."""
    try:
        before: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise
        before = None
    if before is not None and not stat.S_ISREG(before.st_mode):
        raise InvalidPrefixFile(f"{source}: {file_kind(before.st_mode)}, not a regular file; not read")
    try:
        fd = os.open(path, flags | _OPEN_FLAGS | (os.O_CREAT if create else 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a link after the lstat
            raise InvalidPrefixFile(f"{source}: a symlink, not a regular file; not read") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidPrefixFile(f"{source}: {file_kind(st.st_mode)}, not a regular file; not read")
        if before is not None and (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise PrefixPending(f"{source}: pending: the file was replaced while it was opened")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_limited(path: Path, limit: int, source: str, *, root: Path | None = None) -> FileRead:
    """The whole content of the regular file ``path``, refusing more than ``limit`` bytes.

    ``root``: the prefix folder; ``path`` may then be a symlink to a file inside it. Without ``root``
    a link is never followed."""
    if root is not None:
        check_inside(path, root, source)
        path = path.resolve()
    fd = open_regular(path, source)
    try:
        before = os.fstat(fd)
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
        raise PrefixPending(f"{source}: pending: the file changed while it was read (a write in progress)")
    return FileRead(b"".join(chunks), after.st_size, after.st_mtime_ns)
