"""Write trained prefixes as native files and read prefixes for the method's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from service.engine.backbone import BackboneSpec
from service.engine.prefix import LoadedPrefix
from service.method.trunk_file import first_layer_of, load_trunk_file, parse_trunk_native
from service.registry.folder import scan_folder
from service.registry.formats import atomic_write, load_prefix, native_bytes

MAX_PREFIX_LEN = 256
MAX_BYTES = 64 * 1024 * 1024


def write_native(
    path: Path, key: torch.Tensor, value: torch.Tensor, metadata: dict[str, Any], spec: BackboneSpec
) -> LoadedPrefix:
    """Serialize, validate exactly as the server would, then write atomically. Returns the loaded prefix."""
    data = native_bytes(key, value, metadata)
    name = path.name.removesuffix(".safetensors")
    loaded = parse_trunk_native(name, data, spec, source=path.name, max_prefix_len=MAX_PREFIX_LEN)
    atomic_write(path, data)
    return loaded


def load_prefixes(paths: list[Path], spec: BackboneSpec) -> list[LoadedPrefix]:
    """Prefix files and folders; a folder that is not a PEFT adapter is scanned like the prefix folder."""
    out: list[LoadedPrefix] = []
    for p in paths:
        if p.is_dir() and not (p / "adapter_config.json").is_file():
            loaded, rejected = scan_folder(p, spec, max_prefix_len=MAX_PREFIX_LEN, max_bytes=MAX_BYTES)
            trunk = [p / r.source for r in rejected if _is_trunk_file(p / r.source)]
            rejected = [r for r in rejected if not _is_trunk_file(p / r.source)]
            if rejected:
                raise ValueError("; ".join(r.reason for r in rejected))
            out.extend(loaded)
            out.extend(load_trunk_file(t, spec, max_prefix_len=MAX_PREFIX_LEN) for t in trunk)
        elif _is_trunk_file(p):
            out.append(load_trunk_file(p, spec, max_prefix_len=MAX_PREFIX_LEN))
        else:
            out.append(load_prefix(p, spec, max_prefix_len=MAX_PREFIX_LEN, max_bytes=MAX_BYTES))
    names = [p.name for p in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate prefix names {sorted(dup)}")
    return out


def _is_trunk_file(path: Path) -> bool:
    """A native file with first_layer > 0 (read by the method's own reader until the registry's does)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        return first_layer_of(path.read_bytes()[:1_000_000], path.name) > 0
    except ValueError:
        return False
