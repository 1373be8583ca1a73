"""Read and validate native prefix files with ``first_layer`` = S > 0 (keys/values of layers S..L-1).

The method's own reader until the registry's loader reads such files: the file's tensors are padded
with zero layers 0..S-1, every other check is the registry's (:func:`parse_native`), then the S rules
(issue 10): 0 <= S < L, first dimension = L - S, ``position_convention`` ``none`` when S > 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load as st_load

from service.engine.backbone import BackboneSpec
from service.engine.prefix import LoadedPrefix
from service.registry.formats import InvalidPrefixFile, native_bytes, parse_native


def header_metadata(data: bytes) -> dict[str, str]:
    """The safetensors ``__metadata__`` of ``data`` (empty when absent or unreadable)."""
    try:
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return {str(k): str(v) for k, v in meta.items()}


def first_layer_of(data: bytes, source: str) -> int:
    raw = header_metadata(data).get("first_layer", "0")
    try:
        return int(raw)
    except ValueError:
        raise InvalidPrefixFile(f"{source}: first_layer {raw!r} is not an integer") from None


def parse_trunk_native(
    name: str, data: bytes, spec: BackboneSpec, *, source: str, max_prefix_len: int
) -> LoadedPrefix:
    """A native prefix file with any ``first_layer`` (0 included); raises :class:`InvalidPrefixFile`."""
    first = first_layer_of(data, source)
    if first == 0:
        return parse_native(name, data, spec, source=source, max_prefix_len=max_prefix_len)
    if not 0 < first < spec.num_layers:
        raise InvalidPrefixFile(f"{source}: first_layer {first} outside 0..{spec.num_layers - 1}")
    meta = header_metadata(data)
    if meta.get("position_convention", "peft") != "none":
        raise InvalidPrefixFile(f"{source}: first_layer {first} needs position_convention 'none'")
    tensors = st_load(data)
    key, value = tensors.get("key"), tensors.get("value")
    if key is None or value is None or key.dim() != 4 or value.shape != key.shape:
        raise InvalidPrefixFile(
            f"{source}: key/value missing or not [layers, heads, len, head_dim] of one shape"
        )
    if key.shape[0] != spec.num_layers - first:
        raise InvalidPrefixFile(
            f"{source}: key has {key.shape[0]} layers, first_layer {first} needs {spec.num_layers - first}"
        )
    pad = key.new_zeros((first, *key.shape[1:]))
    padded = native_bytes(
        torch.cat([pad, key]), torch.cat([pad, value]), {k: v for k, v in meta.items() if k != "format"}
    )
    full = parse_native(name, padded, spec, source=source, max_prefix_len=max_prefix_len)
    return dataclasses.replace(
        full,
        digest=hashlib.sha256(data).hexdigest(),
        key=full.key[first:].contiguous(),
        value=full.value[first:].contiguous(),
        first_layer=first,
    )


def load_trunk_file(path: Path, spec: BackboneSpec, *, max_prefix_len: int) -> LoadedPrefix:
    return parse_trunk_native(
        path.name.removesuffix(".safetensors"),
        path.read_bytes(),
        spec,
        source=path.name,
        max_prefix_len=max_prefix_len,
    )
