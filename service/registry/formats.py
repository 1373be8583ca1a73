"""Prefix file formats, validated against the backbone. Only safetensors is ever read: no unpickling.

- native: ``NAME.safetensors`` with tensors ``key`` and ``value`` [layers, heads, prefix_len, head_dim]
  and string metadata (see prefixes/README.md);
- PEFT: a ``NAME/`` folder with ``adapter_config.json`` (PrefixTuning) and ``adapter_model.safetensors``
  holding ``prompt_embeddings`` [prefix_len, layers * 2 * hidden].
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from service.engine.backbone import BackboneSpec
from service.engine.prefix import LoadedPrefix
from service.errors import InvalidPrefixFile

FORMAT_VERSION = "prefix-embed/1"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
CONVENTIONS = ("peft", "none")
NATIVE_SUFFIX = ".safetensors"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def prefix_name(path: Path) -> str | None:
    """The prefix name a folder entry would have, or None for files that are not prefixes."""
    if path.is_dir():
        return path.name
    if path.suffix == NATIVE_SUFFIX:
        return path.name[: -len(NATIVE_SUFFIX)]
    return None


def check_name(name: str, source: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise InvalidPrefixFile(f"{source}: bad prefix name {name!r}: must match [a-z0-9][a-z0-9_.-]{{0,63}}")


def _looks_pickled(data: bytes) -> bool:
    # pickle protocol 2+ opens with 0x80 <protocol>; torch.save writes a zip archive ("PK"). A safetensors
    # file opens with its u64 header length, whose low bytes can be exactly 0x80 0x02..0x05 (a header of
    # 640..1535 bytes), then "{": that is never a pickle.
    if data[8:9] == b"{":
        return False
    return (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or data[:2] == b"PK"


def _parse_safetensors(data: bytes, source: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not data:
        raise InvalidPrefixFile(f"{source}: empty file")
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, OSError) as exc:
        if _looks_pickled(data):
            raise InvalidPrefixFile(
                f"{source}: looks like a pickle / torch.save archive; only safetensors is loaded"
            ) from None
        raise InvalidPrefixFile(
            f"{source}: not a valid safetensors file (truncated or corrupt): {exc}"
        ) from None
    meta = header.get("__metadata__") or {}
    return tensors, {str(k): str(v) for k, v in meta.items()}


def _check_tensor(t: torch.Tensor, what: str, source: str) -> torch.Tensor:
    if t.dtype not in FLOAT_DTYPES:
        raise InvalidPrefixFile(
            f"{source}: {what} has dtype {t.dtype}; expected float32, float16 or bfloat16"
        )
    t = t.to(torch.float32)
    if not torch.isfinite(t).all():
        raise InvalidPrefixFile(f"{source}: {what} contains NaN or inf")
    return t


def _check_shape(
    key: torch.Tensor, value: torch.Tensor, spec: BackboneSpec, source: str, max_len: int
) -> None:
    if key.ndim != 4 or value.shape != key.shape:
        raise InvalidPrefixFile(
            f"{source}: key {tuple(key.shape)} and value {tuple(value.shape)} must both be "
            "[layers, heads, prefix_len, head_dim]"
        )
    layers, heads, plen, hdim = key.shape
    expected = {"layers": spec.num_layers, "heads": spec.num_heads, "head_dim": spec.head_dim}
    for what, got in (("layers", layers), ("heads", heads), ("head_dim", hdim)):
        if got != expected[what]:
            raise InvalidPrefixFile(f"{source}: {what} is {got}, the backbone has {expected[what]}")
    if not 1 <= plen <= max_len:
        raise InvalidPrefixFile(f"{source}: prefix_len {plen} outside 1..{max_len}")


def _check_positions(prefix: LoadedPrefix, spec: BackboneSpec) -> None:
    # A text needs at least [CLS] and [SEP] after the prefix's position shift.
    if spec.position_offset + prefix.position_shift + 2 > spec.max_positions:
        raise InvalidPrefixFile(
            f"{prefix.source}: prefix_len {prefix.prefix_len} with the {prefix.position_convention!r} position "
            f"convention leaves no room for text in the model's {spec.max_positions} positions"
        )


def _decode_meta(meta: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v) if v[:1] in "[{" else v
        except json.JSONDecodeError:
            out[k] = v
    return out


def parse_native(
    name: str, data: bytes, spec: BackboneSpec, *, source: str, max_prefix_len: int
) -> LoadedPrefix:
    """Validate native prefix bytes. Raises :class:`InvalidPrefixFile` naming ``source`` and the reason."""
    check_name(name, source)
    tensors, meta = _parse_safetensors(data, source)
    missing = {"key", "value"} - tensors.keys()
    if missing:
        raise InvalidPrefixFile(f"{source}: missing tensor(s) {sorted(missing)}; has {sorted(tensors)}")
    extra = tensors.keys() - {"key", "value"}
    if extra:
        raise InvalidPrefixFile(f"{source}: unexpected tensor(s) {sorted(extra)}")
    key = _check_tensor(tensors["key"], "key", source)
    value = _check_tensor(tensors["value"], "value", source)
    _check_shape(key, value, spec, source, max_prefix_len)
    fmt = meta.get("format", FORMAT_VERSION)
    if fmt != FORMAT_VERSION:
        raise InvalidPrefixFile(f"{source}: format {fmt!r} is not supported (expected {FORMAT_VERSION!r})")
    convention = meta.get("position_convention", "peft")
    if convention not in CONVENTIONS:
        raise InvalidPrefixFile(f"{source}: position_convention {convention!r} not in {CONVENTIONS}")
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
        metadata=_decode_meta(meta),
    )
    _check_positions(prefix, spec)
    return prefix


def peft_prompt_to_kv(weight: torch.Tensor, spec: BackboneSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """PEFT's ``prompt_embeddings`` [Lp, layers*2*hidden] -> key, value [layers, heads, Lp, head_dim]."""
    plen = weight.shape[0]
    kv = weight.view(plen, spec.num_layers, 2, spec.num_heads, spec.head_dim).permute(1, 2, 3, 0, 4)
    return kv[:, 0].contiguous(), kv[:, 1].contiguous()


def parse_peft(
    name: str,
    config_bytes: bytes,
    weight_bytes: bytes,
    spec: BackboneSpec,
    *,
    source: str,
    max_prefix_len: int,
) -> LoadedPrefix:
    """Validate a PEFT PrefixTuning adapter (also one trained with ``prefix_projection``: PEFT saves the
    projected prefix as ``prompt_embeddings``)."""
    check_name(name, source)
    try:
        cfg = json.loads(config_bytes)
        assert isinstance(cfg, dict)
    except (json.JSONDecodeError, UnicodeDecodeError, AssertionError):
        raise InvalidPrefixFile(f"{source}: {PEFT_CONFIG} is not a JSON object") from None
    if cfg.get("peft_type") != "PREFIX_TUNING":
        raise InvalidPrefixFile(
            f"{source}: peft_type is {cfg.get('peft_type')!r}, only PREFIX_TUNING is served"
        )
    want = {
        "num_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "token_dim": spec.hidden_size,
    }
    for k, v in want.items():
        if cfg.get(k) != v:
            raise InvalidPrefixFile(
                f"{source}: PEFT config of another architecture: {k}={cfg.get(k)!r}, the backbone has {v}"
            )
    if cfg.get("num_transformer_submodules", 1) != 1:
        raise InvalidPrefixFile(
            f"{source}: encoder-decoder prefixes (num_transformer_submodules != 1) unsupported"
        )
    tensors, _ = _parse_safetensors(weight_bytes, f"{source}/{PEFT_WEIGHTS}")
    if "prompt_embeddings" not in tensors:
        raise InvalidPrefixFile(
            f"{source}: {PEFT_WEIGHTS} has no 'prompt_embeddings' (has {sorted(tensors)})"
        )
    w = _check_tensor(tensors["prompt_embeddings"], "prompt_embeddings", source)
    plen = int(cfg.get("num_virtual_tokens", -1))
    if w.ndim != 2 or w.shape != (plen, spec.num_layers * 2 * spec.hidden_size):
        raise InvalidPrefixFile(
            f"{source}: prompt_embeddings {tuple(w.shape)}, expected ({plen}, {spec.num_layers * 2 * spec.hidden_size})"
        )
    key, value = peft_prompt_to_kv(w, spec)
    _check_shape(key, value, spec, source, max_prefix_len)
    digest = hashlib.sha256(config_bytes + b"\0" + weight_bytes).hexdigest()
    meta = {"peft_config": cfg}
    prefix = LoadedPrefix(name, digest, key, value, "peft", source, "peft", meta)
    _check_positions(prefix, spec)
    return prefix


def load_prefix(path: Path, spec: BackboneSpec, *, max_prefix_len: int, max_bytes: int) -> LoadedPrefix:
    """Load and validate one entry of the prefix folder."""
    source = path.name
    if path.suffix in PICKLE_SUFFIXES:
        raise InvalidPrefixFile(
            f"{source}: pickle-based files are never loaded; save the prefix as safetensors"
        )
    name = prefix_name(path)
    if name is None:
        raise InvalidPrefixFile(
            f"{source}: not a prefix (expected NAME.safetensors or a PEFT adapter folder)"
        )
    if path.is_dir():
        cfg, weights = path / PEFT_CONFIG, path / PEFT_WEIGHTS
        if not cfg.is_file() or not weights.is_file():
            pickled = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
            hint = f" (found {pickled}: pickle files are never loaded)" if pickled else ""
            raise InvalidPrefixFile(
                f"{source}: PEFT adapter folder needs {PEFT_CONFIG} and {PEFT_WEIGHTS}{hint}"
            )
        _check_size(weights, max_bytes, source)
        return parse_peft(
            name, cfg.read_bytes(), weights.read_bytes(), spec, source=source, max_prefix_len=max_prefix_len
        )
    _check_size(path, max_bytes, source)
    return parse_native(name, path.read_bytes(), spec, source=source, max_prefix_len=max_prefix_len)


def _check_size(path: Path, max_bytes: int, source: str) -> None:
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidPrefixFile(f"{source}: {size} bytes is over the {max_bytes}-byte limit")


def native_bytes(key: torch.Tensor, value: torch.Tensor, metadata: dict[str, Any]) -> bytes:
    """Serialize a native prefix, byte-for-byte deterministic (so the digest names the content).

    Non-string metadata values are stored as JSON. safetensors writes its header keys in no fixed
    order; the header is re-emitted with sorted keys (same offsets, padded to 8 bytes as the format
    requires), so saving the same prefix twice gives the same bytes and the same digest.
    """
    meta = {"format": FORMAT_VERSION}
    for k, v in metadata.items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    tensors = {
        "key": key.detach().to(torch.float32).contiguous(),
        "value": value.detach().to(torch.float32).contiguous(),
    }
    raw = st_save(tensors, metadata=meta)
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    canonical += b" " * (-len(canonical) % 8)
    return len(canonical).to_bytes(8, "little") + canonical + raw[8 + header_len :]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
