"""Write calibrations: into a native prefix file (re-written whole through the project's writer, so
its digest changes) and the base calibration file. :func:`calibrate_prefix_file` is the one hook a
writer of prefix files (``train``, ``fit``) calls after writing one; ``python -m service calibrate``
runs :func:`calibrate_files` over a folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from service.engine.backbone import BackboneSpec
from service.engine.calibration import (
    Calibration,
    CalibrationCorpus,
    calibrate_many,
    measures,
    vectors_identity,
)
from service.engine.encoder import Encoder
from service.engine.prefix import LoadedPrefix, base_prefix
from service.errors import InvalidPrefixFile
from service.registry.calibration import (
    METADATA_KEY,
    base_file_name,
    read_base_calibration,
    record_text,
    sealed,
)
from service.registry.limits import PrefixLimits
from service.registry.names import NATIVE_SUFFIX, prefix_name
from service.registry.native import parse_native
from service.registry.reading import read_limited
from service.registry.tensors import parse_safetensors
from service.registry.writer import atomic_write, native_bytes


@dataclass(frozen=True)
class Written:
    """One calibrated file: its calibration, and whether it was (re)written (False: already current)."""

    path: Path
    calibration: Calibration
    written: bool


# Written by native_bytes itself; everything else of the old metadata is kept as it was.
_REWRITTEN = ("format", "content_sha256", METADATA_KEY)


def _uncalibrated(data: bytes, name: str, spec: BackboneSpec, limits: PrefixLimits) -> LoadedPrefix:
    """The prefix of native file bytes without any calibration they carry (a stale one included),
    validated as the server validates them; its metadata strings as stored."""
    source = f"{name}{NATIVE_SUFFIX}"
    tensors, meta, _ = parse_safetensors(data, source, limits)
    kept = {k: v for k, v in meta.items() if k not in _REWRITTEN}
    if "key" not in tensors or "value" not in tensors:
        raise InvalidPrefixFile(f"{source}: not a native prefix file (tensors key and value)")
    clean = native_bytes(tensors["key"], tensors["value"], kept)
    prefix = parse_native(name, clean, spec, source=source, limits=limits)
    return replace(prefix, metadata=kept)


def with_calibration(
    data: bytes, name: str, cal: Calibration, spec: BackboneSpec, limits: PrefixLimits
) -> bytes:
    """Native prefix bytes carrying ``cal`` (replacing any calibration): the canonical serialization,
    with the old metadata kept. ``cal`` must have measured this file's tensors."""
    prefix = _uncalibrated(data, name, spec, limits)
    if cal.identity != vectors_identity(prefix):
        raise ValueError(f"{name}: the calibration measured other tensors than this file's")
    metadata = {**prefix.metadata, METADATA_KEY: record_text(cal)}
    return native_bytes(prefix.key, prefix.value, metadata, first_layer=prefix.first_layer)


def calibrate_files(
    paths: Sequence[Path],
    encoder: Encoder,
    corpus: CalibrationCorpus,
    *,
    pooling: str,
    base_folder: Path | None = None,
    limits: PrefixLimits | None = None,
    batch: int = 32,
    force: bool = False,
) -> list[Written]:
    """Measure the native prefix files ``paths`` (and ``base``, when ``base_folder`` is given, into its
    ``base.<fingerprint>.calibration.json``) over ``corpus`` in one pass, and write each calibration
    (atomically; a prefix file's digest changes). ``pooling``: the encoder's ``pooling_id``. A file
    whose calibration already measured this corpus, pooling and tensors is left as it is (its digest
    stays) unless ``force``. A file that changed while it was measured is not overwritten
    (ValueError: run again)."""
    limits = limits or PrefixLimits()
    spec = encoder.spec
    todo: list[tuple[Path, bytes | None, LoadedPrefix]] = []
    done: list[Written] = []
    for path in paths:
        name = prefix_name(path)
        if name is None or path.suffix != NATIVE_SUFFIX or path.is_dir():
            raise InvalidPrefixFile(f"{path.name}: only native NAME{NATIVE_SUFFIX} files carry a calibration")
        data = _read(path, limits)
        prefix = _uncalibrated(data, name, spec, limits)
        current = _recorded(data, name, spec, limits)
        if not force and current is not None and measures(current, prefix, corpus, pooling):
            done.append(Written(path, current, False))
        else:
            todo.append((path, data, prefix))
    if base_folder is not None:
        base, path = base_prefix(spec), base_folder / base_file_name(spec)
        try:
            current = read_base_calibration(base_folder, spec)
        except InvalidPrefixFile:
            current = None
        if not force and current is not None and measures(current, base, corpus, pooling):
            done.append(Written(path, current, False))
        else:
            todo.append((path, None, base))
    members = [p for *_, p in todo]
    cals = calibrate_many(encoder, members, corpus, pooling=pooling, batch=batch) if members else []
    for (target, old, prefix), cal in zip(todo, map(sealed, cals), strict=True):
        if old is None:  # base
            atomic_write(target, (record_text(cal) + "\n").encode())
        elif _read(target, limits) != old:
            raise ValueError(f"{target}: changed while it was calibrated; not overwritten (run again)")
        else:
            atomic_write(target, with_calibration(old, prefix.name, cal, spec, limits))
        done.append(Written(target, cal, True))
    return done


def repairable(path: Path, spec: BackboneSpec, limits: PrefixLimits | None = None) -> bool:
    """Whether the native prefix file ``path`` is valid once its calibration is taken out: a file the
    server refuses only for its calibration record (stale format, torn) that calibrating repairs."""
    limits = limits or PrefixLimits()
    name = prefix_name(path)
    if name is None or path.suffix != NATIVE_SUFFIX:
        return False
    try:
        _uncalibrated(_read(path, limits), name, spec, limits)
    except (InvalidPrefixFile, OSError):
        return False
    return True


def _recorded(data: bytes, name: str, spec: BackboneSpec, limits: PrefixLimits) -> Calibration | None:
    """The file's valid calibration, or None (none, or one the server would refuse)."""
    try:
        return parse_native(name, data, spec, source=f"{name}{NATIVE_SUFFIX}", limits=limits).calibration
    except InvalidPrefixFile:
        return None


def calibrate_prefix_file(
    path: Path,
    encoder: Encoder,
    corpus: CalibrationCorpus,
    *,
    pooling: str,
    limits: PrefixLimits | None = None,
) -> Calibration:
    """The hook a writer of a prefix file (``train``, ``fit``) calls once the file is written: measure
    it over ``corpus`` and write the calibration into it (its digest changes)."""
    return calibrate_files([path], encoder, corpus, pooling=pooling, limits=limits)[0].calibration


def _read(path: Path, limits: PrefixLimits) -> bytes:
    return read_limited(path, limits.max_file_bytes, path.name, root=path.parent).data
