"""The native format: ``NAME.safetensors`` with tensors ``key`` and ``value``
[layers - first_layer, heads, prefix_len, head_dim] and string metadata (see prefixes/README.md)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

from service.engine.backbone import BackboneSpec
from service.engine.prefix import LoadedPrefix
from service.errors import InvalidPrefixFile
from service.registry.calibration import METADATA_KEY, file_calibration
from service.registry.limits import PrefixLimits
from service.registry.names import check_name
from service.registry.tensors import check_tensor, decode_metadata, parse_safetensors, tensor_bytes
from service.registry.validate import check_positions, check_shape

FORMAT_VERSION = "prefix-embed/1"
CONVENTIONS = ("peft", "none")
_INT_RE = re.compile(r"-?[0-9]{1,9}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def content_sha256(key_bytes: bytes, value_bytes: bytes) -> str:
    """The checksum our writer records: sha256 of the key tensor's bytes, then the value tensor's."""
    return hashlib.sha256(key_bytes + value_bytes).hexdigest()


def is_verified(prefix: LoadedPrefix) -> bool:
    """Whether the prefix's content was proven whole: a native file whose ``content_sha256`` matched
    (parse_native refuses one that does not). PEFT folders carry no checksum."""
    return prefix.kind == "native" and "content_sha256" in prefix.metadata


def _first_layer(meta: dict[str, str], spec: BackboneSpec, source: str) -> int:
    raw = meta.get("first_layer", "0")
    if not _INT_RE.fullmatch(raw):
        raise InvalidPrefixFile(f"{source}: first_layer {raw!r} is not an integer")
    first = int(raw)
    if not 0 <= first < spec.num_layers:
        raise InvalidPrefixFile(
            f"{source}: first_layer {first} outside 0..{spec.num_layers - 1} (the backbone has {spec.num_layers} layers)"
        )
    return first


def parse_native(
    name: str, data: bytes, spec: BackboneSpec, *, source: str, limits: PrefixLimits
) -> LoadedPrefix:
    """Validate native prefix bytes. Raises :class:`InvalidPrefixFile` naming ``source`` and the reason."""
    check_name(name, source)
    if len(data) > limits.max_file_bytes:
        raise InvalidPrefixFile(f"{source}: {len(data)} bytes is over the {limits.max_file_bytes}-byte limit")
    tensors, meta, header = parse_safetensors(data, source, limits)
    missing = {"key", "value"} - tensors.keys()
    if missing:
        raise InvalidPrefixFile(f"{source}: missing tensor(s) {sorted(missing)}; has {sorted(tensors)}")
    extra = tensors.keys() - {"key", "value"}
    if extra:
        raise InvalidPrefixFile(f"{source}: unexpected tensor(s) {sorted(extra)}")
    fmt = meta.get("format", FORMAT_VERSION)
    if fmt != FORMAT_VERSION:
        raise InvalidPrefixFile(f"{source}: format {fmt!r} is not supported (expected {FORMAT_VERSION!r})")
    checksum = meta.get("content_sha256")
    if checksum is not None:
        if not _SHA256_RE.fullmatch(checksum):
            raise InvalidPrefixFile(f"{source}: content_sha256 {checksum[:80]!r} is not a hex sha256")
        actual = content_sha256(tensor_bytes(data, header, "key"), tensor_bytes(data, header, "value"))
        if actual != checksum:
            raise InvalidPrefixFile(
                f"{source}: content_sha256 does not match the tensors (a partial, torn or altered write)"
            )
    key = check_tensor(tensors["key"], "key", source, limits)
    value = check_tensor(tensors["value"], "value", source, limits)
    first_layer = _first_layer(meta, spec, source)
    check_shape(key, value, spec, source, limits, first_layer=first_layer)
    convention = meta.get("position_convention", "peft")
    if convention not in CONVENTIONS:
        raise InvalidPrefixFile(f"{source}: position_convention {convention!r} not in {CONVENTIONS}")
    if first_layer > 0 and convention != "none":
        raise InvalidPrefixFile(
            f"{source}: position_convention {convention!r} with first_layer {first_layer}: a prefix that starts "
            "above layer 0 must use 'none' (a position shift changes layer 0's input, so it cannot share a trunk)"
        )
    fp = meta.get("backbone_fingerprint")
    if fp and fp != spec.fingerprint:
        raise InvalidPrefixFile(f"{source}: trained for backbone {fp}, this server runs {spec.fingerprint}")
    prefix = LoadedPrefix(
        name=name,
        digest=hashlib.sha256(data).hexdigest(),
        key=key.contiguous(),
        value=value.contiguous(),
        position_convention=convention,
        source=source,
        kind="native",
        # the calibration is the prefix's `calibration` (GET /prefixes shows its summary), not metadata
        metadata=decode_metadata({k: v for k, v in meta.items() if k != METADATA_KEY}, source, limits),
        first_layer=first_layer,
    )
    check_positions(prefix, spec)
    calibration = file_calibration(meta, prefix, spec, source)
    return prefix if calibration is None else replace(prefix, calibration=calibration)
