"""The one writer of head files: ``train``, the shipped heads' fit and every later fitter call
:func:`write_head` (or :func:`head_bytes` for an upload), so every head on disk has the same format,
a ``content_sha256`` and bytes that validate (they are parsed back before anything is written)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.engine.backbone import BackboneSpec
from service.heads.format import HEAD_FORMAT, head_checksum, parse_head
from service.heads.head import Activation, HeadInput, TaskHead
from service.registry.limits import PrefixLimits
from service.registry.names import HEADS_DIR, NATIVE_SUFFIX
from service.registry.writer import atomic_write, canonical_safetensors, metadata_strings

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class HeadParams:
    """What a head file holds. ``weight`` [rows, dim_in] with rows = len(labels) (softmax) or 1
    (sigmoid: the logit of ``labels[1]``); ``bias`` [rows]; ``mean``/``scale`` [dim_in] or None.
    ``metadata``: provenance (``fit``, ``metrics``, ``data``, ...), stored as JSON."""

    weight: Array
    bias: Array
    labels: Sequence[str]
    inputs: Sequence[HeadInput]
    normalize: bool
    activation: Activation
    task: str
    mean: Array | None = None
    scale: Array | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _tensor(a: Array) -> torch.Tensor:
    t = a.detach() if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    return t.to(torch.float32).contiguous()


def head_bytes(params: HeadParams, spec: BackboneSpec) -> bytes:
    """The head file's bytes (deterministic: the same head gives the same bytes and digest)."""
    tensors = {"weight": _tensor(params.weight), "bias": _tensor(params.bias)}
    if params.mean is not None and params.scale is not None:
        tensors |= {"mean": _tensor(params.mean), "scale": _tensor(params.scale)}
    meta = params.metadata | {
        "format": HEAD_FORMAT,
        "labels": list(params.labels),
        "inputs": [{"name": i.name, "digest": i.digest} for i in params.inputs],
        "normalize": params.normalize,  # JSON: "true" | "false"
        "activation": params.activation,
        "task": params.task,
        "backbone_fingerprint": spec.fingerprint,
        "content_sha256": head_checksum({k: t.numpy().tobytes() for k, t in tensors.items()}),
    }
    return canonical_safetensors(tensors, metadata_strings(meta))


def head_path(prefix_dir: Path, name: str) -> Path:
    return Path(prefix_dir) / HEADS_DIR / f"{name}{NATIVE_SUFFIX}"


def build_head(
    name: str, params: HeadParams, spec: BackboneSpec, limits: PrefixLimits | None = None
) -> tuple[TaskHead, bytes]:
    """The head as a server loads it from the file's bytes (validated: :class:`InvalidHeadFile` if not),
    and those bytes."""
    data = head_bytes(params, spec)
    source = f"{HEADS_DIR}/{name}{NATIVE_SUFFIX}"
    return parse_head(name, data, spec, source=source, limits=limits or PrefixLimits()), data


def write_head(
    prefix_dir: Path, name: str, params: HeadParams, spec: BackboneSpec, limits: PrefixLimits | None = None
) -> TaskHead:
    """Validate, then write ``prefix_dir/heads/NAME.safetensors`` atomically (temp file + rename); a
    watching server hot-loads it. Returns the head as the server will load it."""
    head, data = build_head(name, params, spec, limits)
    atomic_write(head_path(prefix_dir, name), data)
    return head
