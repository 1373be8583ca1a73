"""Random prefixes for a ``BackboneSpec``: tensors, native file bytes, files in a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from service.engine.backbone import BackboneSpec
from service.engine.bank import PrefixBank
from service.engine.encoder import Encoder, TokenizedBatch
from service.engine.prefix import LoadedPrefix, base_prefix
from service.registry.writer import native_bytes


def random_kv(
    spec: BackboneSpec, prefix_len: int, seed: int = 0, scale: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Key and value ~ N(0, scale^2) of shape [layers, heads, prefix_len, head_dim]."""
    g = torch.Generator().manual_seed(seed)
    shape = (spec.num_layers, spec.num_heads, prefix_len, spec.head_dim)
    return torch.randn(shape, generator=g) * scale, torch.randn(shape, generator=g) * scale


def prefix_bytes(spec: BackboneSpec, prefix_len: int = 4, seed: int = 0, **meta: object) -> bytes:
    """A native prefix file for ``spec`` (its fingerprint in the metadata, plus ``meta``)."""
    key, value = random_kv(spec, prefix_len, seed)
    return native_bytes(key, value, {"backbone_fingerprint": spec.fingerprint, **meta})


def write_prefix(
    folder: Path, name: str, spec: BackboneSpec, prefix_len: int = 4, seed: int = 0, **meta: object
) -> Path:
    """``folder/<name>.safetensors`` from :func:`prefix_bytes`; returns its path."""
    path = folder / f"{name}.safetensors"
    path.write_bytes(prefix_bytes(spec, prefix_len, seed, **meta))
    return path


def trunk_prefix(
    spec: BackboneSpec, name: str, first_layer: int, prefix_len: int, seed: int, convention: str = "none"
) -> LoadedPrefix:
    """A random native prefix acting in layers first_layer..L-1 (key/value [L - S, heads, len, head_dim])."""
    g = torch.Generator().manual_seed(seed)
    shape = (spec.num_layers - first_layer, spec.num_heads, prefix_len, spec.head_dim)
    key, value = torch.randn(shape, generator=g) * 0.5, torch.randn(shape, generator=g) * 0.5
    digest = f"{name}-s{first_layer}-n{prefix_len}-{seed}"
    return LoadedPrefix(name, digest, key, value, convention, "<test>", "native", first_layer=first_layer)


def base_vectors(encoder: Encoder, batch: TokenizedBatch) -> np.ndarray:
    """float32 [B, dim]: the plain backbone's vectors, as the service computes them (the ``base`` slot)."""
    bank = PrefixBank.build([], base=base_prefix(encoder.spec))
    return encoder.encode(batch, bank, [0])[:, 0]
