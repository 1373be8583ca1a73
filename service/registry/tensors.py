"""safetensors bytes -> tensors and metadata, with every check that is not format specific:
pickle sniffing, header size, JSON constants and nesting of the metadata, dtype, finite and bounded
values."""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from service.errors import InvalidPrefixFile
from service.registry.limits import PrefixLimits

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _looks_pickled(data: bytes) -> bool:
    # pickle protocol 2+ opens with 0x80 <protocol>; torch.save writes a zip archive ("PK"). A safetensors
    # file opens with its u64 header length, whose low bytes can be exactly 0x80 0x02..0x05 (a header of
    # 640..1535 bytes), then "{": that is never a pickle.
    if data[8:9] == b"{":
        return False
    return (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or data[:2] == b"PK"


class _JSONConstant(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise _JSONConstant(f"{name} is not JSON (only finite numbers are)")


def json_depth(text: str) -> int:
    """The nesting depth of JSON ``text`` (brackets outside strings), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def strict_json(text: str | bytes, what: str, source: str, max_depth: int) -> Any:
    """Parse JSON refusing NaN/Infinity and nesting deeper than ``max_depth``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPrefixFile(f"{source}: {what} is not UTF-8 text") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise InvalidPrefixFile(f"{source}: {what} is nested {depth} levels deep; the limit is {max_depth}")
    try:
        return json.loads(text, parse_constant=_no_constants)
    except _JSONConstant as exc:
        raise InvalidPrefixFile(f"{source}: {what}: {exc}") from None
    except ValueError as exc:
        raise InvalidPrefixFile(f"{source}: {what} is not valid JSON: {exc}") from None


def parse_safetensors(
    data: bytes, source: str, limits: PrefixLimits
) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, Any]]:
    """Tensors, raw string metadata and the parsed header (for tensor byte offsets)."""
    if not data:
        raise InvalidPrefixFile(f"{source}: empty file")
    header_len = int.from_bytes(data[:8], "little")
    if len(data) >= 8 and data[8:9] == b"{" and header_len > limits.max_header_bytes:
        raise InvalidPrefixFile(
            f"{source}: safetensors header of {header_len} bytes is over the {limits.max_header_bytes}-byte limit"
        )
    try:
        tensors = st_load(data)
        header = strict_json(
            data[8 : 8 + header_len], "the safetensors header", source, limits.max_metadata_depth
        )
    except (SafetensorError, ValueError, OSError, InvalidPrefixFile) as exc:
        if _looks_pickled(data):
            raise InvalidPrefixFile(
                f"{source}: looks like a pickle / torch.save archive; only safetensors is loaded"
            ) from None
        if isinstance(exc, InvalidPrefixFile):
            raise
        raise InvalidPrefixFile(
            f"{source}: not a valid safetensors file (truncated or corrupt): {exc}"
        ) from None
    meta = header.get("__metadata__") or {}
    return tensors, {str(k): str(v) for k, v in meta.items()}, header


def tensor_bytes(data: bytes, header: dict[str, Any], name: str) -> bytes:
    """The raw bytes of tensor ``name`` exactly as stored in the file."""
    start, end = header[name]["data_offsets"]
    base = 8 + int.from_bytes(data[:8], "little")
    return data[base + start : base + end]


def check_tensor(t: torch.Tensor, what: str, source: str, limits: PrefixLimits) -> torch.Tensor:
    """float32 copy of ``t``; refuses other dtypes, NaN/inf and entries beyond ``max_abs_value``."""
    if t.dtype not in FLOAT_DTYPES:
        raise InvalidPrefixFile(
            f"{source}: {what} has dtype {t.dtype}; expected float32, float16 or bfloat16"
        )
    t = t.to(torch.float32)
    if not torch.isfinite(t).all():
        raise InvalidPrefixFile(f"{source}: {what} contains NaN or inf")
    if t.numel():
        peak = float(t.abs().max())
        if peak > limits.max_abs_value:
            raise InvalidPrefixFile(
                f"{source}: {what} has an entry of magnitude {peak:.3g}; the limit is {limits.max_abs_value:g} "
                "(larger values overflow attention in float16/float32)"
            )
    return t


def decode_metadata(meta: dict[str, str], source: str, limits: PrefixLimits) -> dict[str, Any]:
    """String metadata -> values: JSON objects/lists decoded (strictly), other strings kept."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if v[:1] in ("[", "{"):
            what = f"metadata {k!r}"
            depth = json_depth(v)
            if depth > limits.max_metadata_depth:
                raise InvalidPrefixFile(
                    f"{source}: {what} is nested {depth} levels deep; the limit is {limits.max_metadata_depth}"
                )
            try:
                out[k] = json.loads(v, parse_constant=_no_constants)
            except _JSONConstant as exc:
                raise InvalidPrefixFile(f"{source}: {what}: {exc}") from None
            except ValueError:
                out[k] = v  # text that merely starts with a bracket
        else:
            out[k] = v
    return out
