"""PEFT PrefixTuning adapters: ``NAME/adapter_config.json`` + ``adapter_model.safetensors`` holding
``prompt_embeddings`` [prefix_len, layers * 2 * hidden]. Served with the ``peft`` position convention
and first_layer 0 (PEFT prefixes act in every layer)."""

from __future__ import annotations

import hashlib

import torch

from service.engine.backbone import BackboneSpec
from service.engine.prefix import LoadedPrefix
from service.errors import InvalidPrefixFile
from service.registry.limits import PrefixLimits
from service.registry.names import PEFT_CONFIG, PEFT_WEIGHTS, check_name
from service.registry.tensors import check_tensor, parse_safetensors, strict_json
from service.registry.validate import check_positions, check_shape


def prompt_to_kv(
    weight: torch.Tensor, num_layers: int, num_heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """THE prefix parameter layout: PEFT's prompt [Lp, layers*2*hidden] -> key, value [layers, heads, Lp,
    head_dim]. Per virtual token the row holds, for each layer, the key then the value, each as
    heads x head_dim. Used by the loader, by training (service/method/prefix_model.py) and by task
    similarity (the seeded starting point)."""
    plen = weight.shape[0]
    kv = weight.view(plen, num_layers, 2, num_heads, head_dim).permute(1, 2, 3, 0, 4)
    return kv[:, 0].contiguous(), kv[:, 1].contiguous()


def _int_field(cfg: dict[str, object], key: str, source: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidPrefixFile(f"{source}: {PEFT_CONFIG}: {key} is {value!r}, expected an integer")
    return value


def parse_peft(
    name: str,
    config_bytes: bytes,
    weight_bytes: bytes,
    spec: BackboneSpec,
    *,
    source: str,
    limits: PrefixLimits,
) -> LoadedPrefix:
    """Validate a PEFT PrefixTuning adapter (also one trained with ``prefix_projection``: PEFT saves the
    projected prefix as ``prompt_embeddings``)."""
    check_name(name, source)
    if len(config_bytes) > limits.max_config_bytes:
        raise InvalidPrefixFile(f"{source}: {PEFT_CONFIG} is over the {limits.max_config_bytes}-byte limit")
    cfg = strict_json(config_bytes, PEFT_CONFIG, source, limits.max_metadata_depth)
    if not isinstance(cfg, dict):
        raise InvalidPrefixFile(f"{source}: {PEFT_CONFIG} is not a JSON object")
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
    plen = _int_field(cfg, "num_virtual_tokens", source)
    tensors, _, _ = parse_safetensors(weight_bytes, f"{source}/{PEFT_WEIGHTS}", limits)
    if "prompt_embeddings" not in tensors:
        raise InvalidPrefixFile(
            f"{source}: {PEFT_WEIGHTS} has no 'prompt_embeddings' (has {sorted(tensors)})"
        )
    w = check_tensor(tensors["prompt_embeddings"], "prompt_embeddings", source, limits)
    width = spec.num_layers * 2 * spec.hidden_size
    if w.ndim != 2 or w.shape != (plen, width):
        raise InvalidPrefixFile(f"{source}: prompt_embeddings {tuple(w.shape)}, expected ({plen}, {width})")
    key, value = prompt_to_kv(w, spec.num_layers, spec.num_heads, spec.head_dim)
    check_shape(key, value, spec, source, limits, first_layer=0)
    digest = hashlib.sha256(config_bytes + b"\0" + weight_bytes).hexdigest()
    prefix = LoadedPrefix(
        name, digest, key, value, "peft", source, "peft", {"peft_config": cfg}, first_layer=0
    )
    check_positions(prefix, spec)
    return prefix
