"""Write prefix files: the canonical native serialization and the atomic write (temp file + rename)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from service.registry.native import FORMAT_VERSION, content_sha256
from service.registry.tensors import tensor_bytes

log = logging.getLogger(__name__)

# Temp files of atomic_write: ".NAME.<random>.tmp" beside the target.
TMP_SUFFIX = ".tmp"
# An orphan (its writer was killed) is removed once this old: no live write of a prefix file (<= 64 MiB,
# one write call) takes that long, and a replica sharing the folder may be writing one right now.
ORPHAN_AGE_S = 60.0


def native_bytes(
    key: torch.Tensor, value: torch.Tensor, metadata: dict[str, Any], *, first_layer: int | None = None
) -> bytes:
    """Serialize a native prefix, byte-for-byte deterministic (so the digest names the content).

    Records ``first_layer`` (the keyword, else ``metadata["first_layer"]``, else 0) and
    ``content_sha256`` (the loader verifies it: a torn or partial copy is never served). Non-string
    metadata values are stored as JSON (NaN/Infinity refused: they are not JSON). safetensors writes its
    header keys in no fixed order; the header is re-emitted with sorted keys (same offsets, padded to 8
    bytes as the format requires), so saving the same prefix twice gives the same bytes and digest.
    """
    given = metadata.get("first_layer")
    if first_layer is None:
        first_layer = int(given) if given is not None else 0
    elif given is not None and int(given) != first_layer:
        raise ValueError(f"first_layer={first_layer} but metadata says {given!r}")
    tensors = {
        "key": key.detach().to(torch.float32).contiguous(),
        "value": value.detach().to(torch.float32).contiguous(),
    }
    meta = {"format": FORMAT_VERSION, **metadata_strings(metadata)}
    meta["first_layer"] = str(first_layer)
    meta["content_sha256"] = content_sha256(
        tensors["key"].numpy().tobytes(), tensors["value"].numpy().tobytes()
    )
    return canonical_safetensors(tensors, meta)


def with_checksum(data: bytes) -> bytes:
    """Validated native prefix bytes with ``content_sha256`` recorded (an upload written elsewhere):
    the tensors' bytes stay as they are, only the header gains the checksum (keys sorted). Bytes that
    already carry one are returned unchanged."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    meta = dict(header.get("__metadata__") or {})
    if "content_sha256" in meta:
        return data
    meta["content_sha256"] = content_sha256(
        tensor_bytes(data, header, "key"), tensor_bytes(data, header, "value")
    )
    return _canonical(data, meta)


def _canonical(raw: bytes, metadata: dict[str, str] | None = None) -> bytes:
    """safetensors ``raw`` with its header re-emitted with sorted keys (same tensor offsets, padded to
    8 bytes as the format requires); ``metadata`` replaces the header's ``__metadata__``."""
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    if metadata is not None:
        header["__metadata__"] = metadata
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    canonical += b" " * (-len(canonical) % 8)
    return len(canonical).to_bytes(8, "little") + canonical + raw[8 + header_len :]


def metadata_strings(metadata: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata is strings: other values are stored as JSON (NaN/Infinity refused)."""
    return {
        k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, allow_nan=False)
        for k, v in metadata.items()
    }


def canonical_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with the header's keys sorted (same offsets, padded to 8 bytes), so the same
    content always gives the same bytes and digest."""
    return _canonical(st_save(tensors, metadata=metadata))


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a torn one.

    The temp file beside it is new (``O_EXCL``: never an existing file or link) and gets mode 0666 minus
    the process umask (0644 under the usual 022), so a reader with another uid (a bind mount, a
    sidecar) can read it; the rename then replaces whatever ``path`` was (a link is replaced, never
    written through), so nothing is ever written outside ``path``'s folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:
            continue  # a name taken by a concurrent writer: draw another
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Persist the rename itself (best effort: some filesystems refuse fsync on a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_entry(path: Path) -> None:
    """Remove a prefix folder entry in one atomic step: a file or a link is unlinked (a link, never its
    target); a PEFT folder is first renamed to a hidden temp name (readers see it whole or not at all),
    then deleted."""
    if stat.S_ISDIR(path.lstat().st_mode):
        hidden = path.parent / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"
        os.rename(path, hidden)
        shutil.rmtree(hidden, ignore_errors=True)  # what is left is an orphan, removed at a later start
    else:
        os.unlink(path)


def remove_orphans(folder: Path, older_than_s: float = ORPHAN_AGE_S) -> list[str]:
    """Remove temp files of atomic_write left by a killed writer (older than ``older_than_s``)."""
    removed: list[str] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX)):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if now - st.st_mtime < older_than_s:
                continue
            if stat.S_ISREG(st.st_mode):
                os.unlink(entry.path)
            elif stat.S_ISDIR(st.st_mode):  # a PEFT folder whose deletion was cut short
                shutil.rmtree(entry.path)
            else:
                continue
            removed.append(entry.name)
        except OSError:
            continue  # removed by another replica meanwhile
    if removed:
        log.info("removed %d orphaned temp file(s) in %s: %s", len(removed), folder, ", ".join(removed))
    return removed
