"""One entry of the prefix folder (a native file or a PEFT adapter folder) -> a validated prefix."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from service.engine.backbone import BackboneSpec
from service.engine.prefix import LoadedPrefix
from service.errors import InvalidPrefixFile
from service.registry.limits import PrefixLimits
from service.registry.names import PEFT_CONFIG, PEFT_WEIGHTS, PICKLE_SUFFIXES, check_name, prefix_name
from service.registry.native import parse_native
from service.registry.peft import parse_peft
from service.registry.reading import check_inside, file_kind, read_limited


@dataclass(frozen=True)
class Rejected:
    source: str
    reason: str


def rejection_reason(exc: Exception, source: str) -> str:
    """Why a folder entry (a prefix, a head file) was not loaded: the file's own error message, or a
    short one naming ``source`` (any failure rejects the entry, never the scan)."""
    if isinstance(exc, InvalidPrefixFile):
        return exc.message
    if isinstance(exc, OSError):
        return f"{source}: cannot read: {exc.strerror or exc}"
    return f"{source}: cannot load: {type(exc).__name__}: {str(exc)[:200]}"


def load_prefix(
    path: Path, spec: BackboneSpec, limits: PrefixLimits | None = None, *, root: Path | None = None
) -> LoadedPrefix:
    """Load and validate one entry. ``root``: the prefix folder (symlinks may not leave it; default: the
    entry's parent folder)."""
    limits = limits or PrefixLimits()
    root = path.parent if root is None else root
    source = path.name
    if path.suffix in PICKLE_SUFFIXES:
        raise InvalidPrefixFile(
            f"{source}: pickle-based files are never loaded; save the prefix as safetensors"
        )
    check_inside(path, root, source)
    mode = path.stat().st_mode
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise InvalidPrefixFile(f"{source}: {file_kind(mode)}, not a regular file; not read")
    name = prefix_name(path)
    if name is None:
        raise InvalidPrefixFile(
            f"{source}: not a prefix (expected NAME.safetensors or a PEFT adapter folder)"
        )
    check_name(name, source)  # before the format checks: an empty `base/` is a reserved name first
    if stat.S_ISDIR(mode):
        cfg, weights = path / PEFT_CONFIG, path / PEFT_WEIGHTS
        if not cfg.is_file() or not weights.is_file():
            pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
            hint = f" (found {pickled}: pickle files are never loaded)" if pickled else ""
            raise InvalidPrefixFile(
                f"{source}: PEFT adapter folder needs {PEFT_CONFIG} and {PEFT_WEIGHTS}{hint}"
            )
        config_bytes = read_limited(cfg, limits.max_config_bytes, f"{source}: {PEFT_CONFIG}", root=root).data
        weight_bytes = read_limited(
            weights, limits.max_file_bytes, f"{source}/{PEFT_WEIGHTS}", root=root
        ).data
        return parse_peft(name, config_bytes, weight_bytes, spec, source=source, limits=limits)
    data = read_limited(path, limits.max_file_bytes, source, root=root).data
    return parse_native(name, data, spec, source=source, limits=limits)
