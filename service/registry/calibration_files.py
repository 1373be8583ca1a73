"""Write calibrations: into a native prefix file (re-written whole through the project's writer, so
its digest changes) and the base calibration file. :func:`calibrate_prefix_file` is the one hook a
writer of prefix files (``train``, ``fit``) calls after writing one; ``python -m service calibrate``
runs :func:`calibrate_files` over a folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from service.engine.backbone import BackboneSpec
from service.engine.calibration import Calibration, CalibrationCorpus, calibrate_many, vectors_identity
from service.engine.encoder import Encoder
from service.engine.prefix import LoadedPrefix, base_prefix
from service.errors import InvalidPrefixFile
from service.registry.calibration import METADATA_KEY, base_file_name, record_text, sealed
from service.registry.limits import PrefixLimits
from service.registry.names import NATIVE_SUFFIX, prefix_name
from service.registry.native import parse_native
from service.registry.reading import read_limited
from service.registry.tensors import parse_safetensors
from service.registry.writer import atomic_write, native_bytes

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
) -> list[tuple[Path, Calibration]]:
    """Measure the native prefix files ``paths`` (and ``base``, when ``base_folder`` is given, into its
    ``base.<fingerprint>.calibration.json``) over ``corpus`` in one pass, and write each calibration
    (atomically; a prefix file's digest changes). ``pooling``: the encoder's ``pooling_id``. A file
    that changed while it was measured is not overwritten (ValueError: run again)."""
    limits = limits or PrefixLimits()
    spec = encoder.spec
    files: list[tuple[Path, str, bytes, LoadedPrefix]] = []
    for path in paths:
        name = prefix_name(path)
        if name is None or path.suffix != NATIVE_SUFFIX or path.is_dir():
            raise InvalidPrefixFile(f"{path.name}: only native NAME{NATIVE_SUFFIX} files carry a calibration")
        data = _read(path, limits)
        files.append((path, name, data, _uncalibrated(data, name, spec, limits)))
    members = [prefix for *_, prefix in files] + ([base_prefix(spec)] if base_folder is not None else [])
    cals = [sealed(c) for c in calibrate_many(encoder, members, corpus, pooling=pooling, batch=batch)]
    written: list[tuple[Path, Calibration]] = []
    for (path, name, data, _), cal in zip(files, cals, strict=False):
        if _read(path, limits) != data:
            raise ValueError(f"{path}: changed while it was calibrated; not overwritten (run again)")
        atomic_write(path, with_calibration(data, name, cal, spec, limits))
        written.append((path, cal))
    if base_folder is not None:
        path = base_folder / base_file_name(spec)
        atomic_write(path, (record_text(cals[-1]) + "\n").encode())
        written.append((path, cals[-1]))
    return written


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
    return calibrate_files([path], encoder, corpus, pooling=pooling, limits=limits)[0][1]


def _read(path: Path, limits: PrefixLimits) -> bytes:
    return read_limited(path, limits.max_file_bytes, path.name, root=path.parent).data
