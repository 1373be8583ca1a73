"""The head file: ``heads/NAME.safetensors``, parsed and validated (format in prefixes/README.md).

Tensors ``weight`` [rows, dim_in], ``bias`` [rows], optionally ``mean`` and ``scale`` [dim_in]; string
metadata ``format``, ``labels``, ``inputs``, ``normalize``, ``activation``, ``task`` and
``content_sha256`` (required: a head is only ever written by :mod:`service.heads.writer`, so a torn or
partial copy never validates), ``backbone_fingerprint`` (checked when present), and free provenance
(``fit``, ``metrics``, ``data``, ...). Every failure is an :class:`InvalidHeadFile` naming the file
and the reason.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np
import torch

from service.engine.backbone import BackboneSpec
from service.engine.prefix import BASE_NAME
from service.errors import InvalidHeadFile, InvalidPrefixFile
from service.heads.head import ACTIVATIONS, HeadInput, TaskHead
from service.registry.limits import PrefixLimits
from service.registry.names import NAME_RE
from service.registry.tensors import decode_metadata, parse_safetensors, tensor_bytes

HEAD_FORMAT = "prefix-embed-head/1"
TENSORS = ("weight", "bias", "mean", "scale")  # in this order in content_sha256
MAX_CLASSES = 4096
MAX_INPUTS = 64
MAX_LABEL_CHARS = 200
# Far above a fitted logistic regression's coefficients (|w| < 10 at C <= 1 on standardized vectors),
# far below float32's range: a product over a few thousand dimensions cannot overflow.
MAX_ABS_VALUE = 1e6
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def head_checksum(arrays: dict[str, bytes]) -> str:
    """sha256 of the tensors' raw bytes in the order of :data:`TENSORS` (those present)."""
    h = hashlib.sha256()
    for name in TENSORS:
        if name in arrays:
            h.update(arrays[name])
    return h.hexdigest()


def _array(t: torch.Tensor, what: str, source: str) -> np.ndarray:
    if not t.is_floating_point():
        raise InvalidHeadFile(f"{source}: {what} has dtype {t.dtype}; expected a float dtype")
    a = t.to(torch.float64).numpy()
    if not np.isfinite(a).all():
        raise InvalidHeadFile(f"{source}: {what} contains NaN or inf")
    if a.size and float(np.abs(a).max()) > MAX_ABS_VALUE:
        raise InvalidHeadFile(f"{source}: {what} has an entry of magnitude over {MAX_ABS_VALUE:g}")
    return a


def _labels(meta: dict[str, Any], source: str) -> tuple[str, ...]:
    labels = meta.get("labels")
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise InvalidHeadFile(f"{source}: metadata 'labels' must be a JSON list of non-empty strings")
    if not 2 <= len(labels) <= MAX_CLASSES:
        raise InvalidHeadFile(f"{source}: {len(labels)} labels; a head has 2..{MAX_CLASSES}")
    if len(set(labels)) != len(labels):
        dupes = sorted({x for x in labels if labels.count(x) > 1})[:5]
        raise InvalidHeadFile(f"{source}: labels are not unique ({', '.join(map(repr, dupes))} repeat)")
    long = [x for x in labels if len(x) > MAX_LABEL_CHARS]
    if long:
        raise InvalidHeadFile(f"{source}: a label is over {MAX_LABEL_CHARS} characters ({long[0][:40]!r}...)")
    return tuple(labels)


def _inputs(meta: dict[str, Any], source: str) -> tuple[HeadInput, ...]:
    raw = meta.get("inputs")
    shape = 'a JSON list of {"name", "digest"} objects'
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_INPUTS:
        raise InvalidHeadFile(f"{source}: metadata 'inputs' must be {shape} (1..{MAX_INPUTS} of them)")
    out: list[HeadInput] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) != {"name", "digest"}:
            raise InvalidHeadFile(f"{source}: inputs[{i}] must be an object with exactly 'name' and 'digest'")
        name, digest = item["name"], item["digest"]
        if not isinstance(name, str) or not (name == BASE_NAME or NAME_RE.fullmatch(name)):
            raise InvalidHeadFile(f"{source}: inputs[{i}] has a bad prefix name {str(name)[:80]!r}")
        if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest):
            raise InvalidHeadFile(f"{source}: inputs[{i}] ({name}): digest must be a hex sha256")
        out.append(HeadInput(name, digest))
    names = [x.name for x in out]
    if len(set(names)) != len(names):
        raise InvalidHeadFile(f"{source}: inputs name a prefix more than once: {names}")
    return tuple(out)


def _flag(meta: dict[str, Any], key: str, source: str) -> bool:
    value = meta.get(key)
    if value not in ("true", "false"):
        raise InvalidHeadFile(
            f'{source}: metadata {key!r} must be "true" or "false", got {str(value)[:40]!r}'
        )
    return value == "true"


def _check_shapes(
    arrays: dict[str, np.ndarray], labels: int, activation: str, dim_in: int, source: str
) -> None:
    weight, bias = arrays["weight"], arrays["bias"]
    rows = 1 if activation == "sigmoid" else labels
    if activation == "sigmoid" and labels != 2:
        raise InvalidHeadFile(f"{source}: a sigmoid head has exactly 2 labels (one logit), not {labels}")
    if weight.shape != (rows, dim_in):
        raise InvalidHeadFile(
            f"{source}: weight is {list(weight.shape)}; a {activation} head with {labels} labels over its "
            f"inputs' {dim_in} dimensions needs [{rows}, {dim_in}]"
        )
    if bias.shape != (rows,):
        raise InvalidHeadFile(f"{source}: bias is {list(bias.shape)}, expected [{rows}]")
    if ("mean" in arrays) != ("scale" in arrays):
        raise InvalidHeadFile(f"{source}: 'mean' and 'scale' come together (standardization) or not at all")
    for what in ("mean", "scale"):
        if what in arrays and arrays[what].shape != (dim_in,):
            raise InvalidHeadFile(f"{source}: {what} is {list(arrays[what].shape)}, expected [{dim_in}]")
    if "scale" in arrays and not (arrays["scale"] > 0).all():
        raise InvalidHeadFile(f"{source}: every 'scale' entry must be > 0")


def parse_head(name: str, data: bytes, spec: BackboneSpec, *, source: str, limits: PrefixLimits) -> TaskHead:
    """Validate head file bytes against the backbone; raises :class:`InvalidHeadFile`."""
    if not NAME_RE.fullmatch(name):
        raise InvalidHeadFile(
            f"{source}: bad head name {name[:80]!r}: must match [a-z0-9][a-z0-9_.-]{{0,63}}"
        )
    if len(data) > limits.max_file_bytes:
        raise InvalidHeadFile(f"{source}: {len(data)} bytes is over the {limits.max_file_bytes}-byte limit")
    try:
        tensors, raw_meta, header = parse_safetensors(data, source, limits)
        meta = decode_metadata(raw_meta, source, limits)
    except InvalidHeadFile:
        raise
    except InvalidPrefixFile as exc:
        raise InvalidHeadFile(exc.message) from None
    unknown = sorted(tensors.keys() - set(TENSORS))
    missing = sorted({"weight", "bias"} - tensors.keys())
    if unknown or missing:
        raise InvalidHeadFile(
            f"{source}: tensors {sorted(tensors)}; a head has weight, bias and optionally mean, scale"
        )
    if meta.get("format") != HEAD_FORMAT:
        raise InvalidHeadFile(f"{source}: format {str(meta.get('format'))[:40]!r} is not {HEAD_FORMAT!r}")
    checksum = meta.get("content_sha256")
    if not isinstance(checksum, str) or not _SHA256_RE.fullmatch(checksum):
        raise InvalidHeadFile(
            f"{source}: content_sha256 is missing or not a hex sha256 (write heads with service.heads.writer)"
        )
    if head_checksum({k: tensor_bytes(data, header, k) for k in tensors}) != checksum:
        raise InvalidHeadFile(
            f"{source}: content_sha256 does not match the tensors (a partial, torn or altered write)"
        )
    fingerprint = meta.get("backbone_fingerprint")
    if fingerprint is not None and fingerprint != spec.fingerprint:
        raise InvalidHeadFile(
            f"{source}: fitted on backbone {str(fingerprint)[:80]}, this server runs {spec.fingerprint}"
        )
    activation = meta.get("activation")
    if activation not in ACTIVATIONS:
        raise InvalidHeadFile(
            f"{source}: activation {str(activation)[:40]!r} is not one of {list(ACTIVATIONS)}"
        )
    task = meta.get("task")
    if not isinstance(task, str) or not task.strip():
        raise InvalidHeadFile(f"{source}: metadata 'task' (what the head predicts) is missing")
    labels, inputs = _labels(meta, source), _inputs(meta, source)
    arrays = {k: _array(t, k, source) for k, t in tensors.items()}
    _check_shapes(arrays, len(labels), activation, len(inputs) * spec.hidden_size, source)
    return TaskHead(
        name=name,
        digest=hashlib.sha256(data).hexdigest(),
        labels=labels,
        inputs=inputs,
        normalize=_flag(meta, "normalize", source),
        activation=activation,
        weight=arrays["weight"],
        bias=arrays["bias"],
        mean=arrays.get("mean"),
        scale=arrays.get("scale"),
        task=task,
        source=source,
        metadata=meta,
    )
