"""Write trained prefixes as native files and read prefixes for the method's commands.

Both go through the registry's own code (one set of rules and limits: service/registry/limits.py).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from service.engine.backbone import BackboneSpec, spec_from_config, weights_digest
from service.engine.prefix import LoadedPrefix
from service.registry.folder import scan_folder
from service.registry.limits import PrefixLimits
from service.registry.loader import load_prefix
from service.registry.names import NATIVE_SUFFIX, PEFT_CONFIG
from service.registry.native import parse_native
from service.registry.writer import atomic_write, native_bytes


def write_native(
    path: Path,
    key: torch.Tensor,
    value: torch.Tensor,
    metadata: dict[str, Any],
    spec: BackboneSpec,
    *,
    first_layer: int | None = None,
) -> LoadedPrefix:
    """Serialize (recording first_layer and content_sha256), validate exactly as the server would, then
    write atomically. Returns the loaded prefix."""
    data = native_bytes(key, value, metadata, first_layer=first_layer)
    name = path.name.removesuffix(NATIVE_SUFFIX)
    loaded = parse_native(name, data, spec, source=path.name, limits=PrefixLimits())
    atomic_write(path, data)
    return loaded


def load_prefixes(paths: list[Path], spec: BackboneSpec) -> list[LoadedPrefix]:
    """Prefix files and folders; a folder that is not a PEFT adapter is scanned like the prefix folder."""
    out: list[LoadedPrefix] = []
    for p in paths:
        if p.is_dir() and not (p / PEFT_CONFIG).is_file():
            loaded, rejected = scan_folder(p, spec)
            if rejected:
                raise ValueError("; ".join(r.reason for r in rejected))
            out.extend(loaded)
        else:
            out.append(load_prefix(p, spec))
    dup = sorted(n for n, c in Counter(p.name for p in out).items() if c > 1)
    if dup:
        raise ValueError(f"duplicate prefix names {dup}")
    return out


def model_spec(model: Path) -> BackboneSpec:
    """The spec of the backbone in folder ``model``, from its config and weights (no model loaded)."""
    from transformers import AutoConfig

    return spec_from_config(AutoConfig.from_pretrained(model, local_files_only=True), weights_digest(model))
