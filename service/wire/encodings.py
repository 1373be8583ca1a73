"""Vector encodings of a response: float, base64 float32, binary sign bits, int8.

- ``base64``: little-endian float32 bytes, base64-encoded.
- ``binary``: 1 bit per dimension, ``numpy.packbits(x > 0)`` (MSB first), base64-encoded:
  32x smaller than float32, 16x smaller than float16 (Du et al. 2020).
- ``int8``: ``round(127 * x / max|x|)`` per returned vector, as a list of ints; the per-vector scale
  keeps cosine similarity and dot-product ranking up to rounding.
"""

from __future__ import annotations

import base64
from typing import get_args

import numpy as np

from service.wire import Encoding

ENCODINGS: tuple[str, ...] = get_args(Encoding)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def binarize(x: np.ndarray) -> np.ndarray:
    """Sign bits packed MSB first along the last axis -> uint8 [..., ceil(d/8)]."""
    return np.packbits(x > 0, axis=-1)


def int8_quantize(x: np.ndarray) -> np.ndarray:
    scale = np.abs(x).max(axis=-1, keepdims=True)
    return np.round(127.0 * x / np.maximum(scale, 1e-12)).astype(np.int8)


def encode_vector(x: np.ndarray, encoding: str) -> np.ndarray | str:
    """One vector ``x`` (float32 [d]) in the wire encoding: a float32 or int8 array (written as a JSON
    list of numbers by :func:`service.wire.document.dumps_document`) or a base64 string."""
    if encoding == "float":
        return x.astype(np.float32, copy=False)
    if encoding == "base64":
        return base64.b64encode(x.astype("<f4").tobytes()).decode("ascii")
    if encoding == "binary":
        return base64.b64encode(binarize(x).tobytes()).decode("ascii")
    if encoding == "int8":
        return int8_quantize(x)
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")


def decode_base64_float(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f4")


def decode_binary(s: str, dim: int) -> np.ndarray:
    """Back to a bool [dim] vector of the signs (x > 0)."""
    return np.unpackbits(np.frombuffer(base64.b64decode(s), dtype=np.uint8))[:dim].astype(bool)
