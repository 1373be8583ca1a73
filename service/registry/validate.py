"""Checks of a prefix against the backbone, shared by the native and the PEFT format."""

from __future__ import annotations

import torch

from service.engine.backbone import BackboneSpec
from service.engine.prefix import LoadedPrefix
from service.errors import InvalidPrefixFile
from service.registry.limits import PrefixLimits


def check_shape(
    key: torch.Tensor,
    value: torch.Tensor,
    spec: BackboneSpec,
    source: str,
    limits: PrefixLimits,
    *,
    first_layer: int,
) -> None:
    """key/value: [layers - first_layer, heads, prefix_len, head_dim] of this backbone."""
    if key.ndim != 4 or value.shape != key.shape:
        raise InvalidPrefixFile(
            f"{source}: key {tuple(key.shape)} and value {tuple(value.shape)} must both be "
            "[layers, heads, prefix_len, head_dim]"
        )
    layers, heads, plen, hdim = key.shape
    want_layers = spec.num_layers - first_layer
    if layers != want_layers:
        if first_layer:
            raise InvalidPrefixFile(
                f"{source}: key/value hold {layers} layers; first_layer {first_layer} needs "
                f"{want_layers} (layers {first_layer}..{spec.num_layers - 1} of the backbone's {spec.num_layers})"
            )
        raise InvalidPrefixFile(f"{source}: layers is {layers}, the backbone has {spec.num_layers}")
    for what, got, expected in (("heads", heads, spec.num_heads), ("head_dim", hdim, spec.head_dim)):
        if got != expected:
            raise InvalidPrefixFile(f"{source}: {what} is {got}, the backbone has {expected}")
    if not 1 <= plen <= limits.max_prefix_len:
        raise InvalidPrefixFile(f"{source}: prefix_len {plen} outside 1..{limits.max_prefix_len}")


def check_positions(prefix: LoadedPrefix, spec: BackboneSpec) -> None:
    # A text needs at least [CLS] and [SEP] after the prefix's position shift.
    if spec.position_offset + prefix.position_shift + 2 > spec.max_positions:
        raise InvalidPrefixFile(
            f"{prefix.source}: prefix_len {prefix.prefix_len} with the {prefix.position_convention!r} position "
            f"convention leaves no room for text in the model's {spec.max_positions} positions"
        )
