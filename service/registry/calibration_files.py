"""Write calibrations: into a native prefix file (re-written whole through the project's writer, so
its digest changes) and the base calibration file. :func:`calibrate_prefix_file` is the one hook a
writer of prefix files (``train``, ``fit``) calls after writing one; ``python -m service calibrate``
(service/calibrate_command.py) runs it over a folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from service.engine.backbone import BackboneSpec
from service.engine.calibration import Calibration, CalibrationCorpus, calibrate, vectors_identity
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


def calibrate_prefix_file(
    path: Path,
    encoder: Encoder,
    corpus: CalibrationCorpus,
    *,
    pooling: str,
    limits: PrefixLimits | None = None,
    batch: int = 32,
) -> Calibration:
    """Measure the native prefix file ``path`` over ``corpus`` and write the calibration into it
    (atomically; the file's digest changes). ``pooling``: the encoder's ``pooling_id``."""
    limits = limits or PrefixLimits()
    name = prefix_name(path)
    if name is None or path.suffix != NATIVE_SUFFIX:
        raise InvalidPrefixFile(f"{path.name}: only native NAME{NATIVE_SUFFIX} files carry a calibration")
    data = read_limited(path, limits.max_file_bytes, path.name, root=path.parent).data
    prefix = _uncalibrated(data, name, encoder.spec, limits)
    cal = sealed(calibrate(encoder, prefix, corpus, pooling=pooling, batch=batch))
    atomic_write(path, with_calibration(data, name, cal, encoder.spec, limits))
    return cal


def calibrate_base_file(
    folder: Path, encoder: Encoder, corpus: CalibrationCorpus, *, pooling: str, batch: int = 32
) -> tuple[Calibration, Path]:
    """Measure the built-in ``base`` over ``corpus`` and write ``base.<fingerprint>.calibration.json``
    into ``folder`` (atomically)."""
    cal = sealed(calibrate(encoder, base_prefix(encoder.spec), corpus, pooling=pooling, batch=batch))
    path = folder / base_file_name(encoder.spec)
    atomic_write(path, (record_text(cal) + "\n").encode())
    return cal, path
