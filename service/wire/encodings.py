"""Vector encodings of a response.

- ``float``: float32 numbers; ``base64``: little-endian float32 bytes, base64-encoded.
- ``int8`` / ``uint8``, ``binary`` / ``ubinary``: the **quantized** encodings, sentence-transformers'
  ``quantize_embeddings`` conventions (lists of integers), of each prefix's **unit** vector (quantized
  codes carry no length, so ``normalize`` does not change them):

  - ``uint8``: ``clip(floor((x - min) / step), 0, 255)`` with ``step = (max - min) / 255`` per
    dimension, from the prefix's calibrated ranges (a zero step counts as 1); ``int8`` is that minus
    128. Equal to ``quantize_embeddings(x, "uint8" | "int8", ranges=[min; max])`` (a value outside the
    calibrated range saturates at 0 or 255).
  - ``ubinary``: ``numpy.packbits(t > 0)`` (MSB first), 1 bit per dimension (32x smaller than
    float32), of the calibrated transform ``t = ((x - centre) / scale) @ R``: the vector standardized
    around its calibrated centre, then projected by the prefix's own random ±1 matrix ``R`` [dim, dim]
    (:func:`projection_matrix` of the calibration's seed); a calibration without a projection takes
    ``t = x - centre``. ``binary`` is those bytes minus 128 as int8: sentence-transformers'
    ``ubinary``/``binary`` of ``t``.

- **Fallback** for a prefix without a (usable) calibration, named ``"uncalibrated"`` in the response:
  ``int8`` = ``round(127 x / max|x|)`` per vector (its own scale, as before calibration), ``uint8`` =
  that + 128, and the signs are taken at 0 (centre 0).

A concat's codes are its prefixes' codes joined in order, each made with its own calibration (the sign
bits are joined before they are packed).
"""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import TYPE_CHECKING, get_args

import numpy as np

from service.wire import Encoding

if TYPE_CHECKING:  # numpy only at run time: the engine (torch) is not imported for an encoding
    from service.engine.calibration import Calibration

ENCODINGS: tuple[str, ...] = get_args(Encoding)
QUANTIZED = ("int8", "uint8", "binary", "ubinary")
BITS = ("binary", "ubinary")
UNCALIBRATED = "uncalibrated"  # the fallback's name in a response's ``calibration``


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def binarize(x: np.ndarray) -> np.ndarray:
    """Sign bits (x > 0) packed MSB first along the last axis -> uint8 [..., ceil(d/8)]."""
    return np.packbits(x > 0, axis=-1)


def int8_quantize(x: np.ndarray) -> np.ndarray:
    """The uncalibrated int8: ``round(127 x / max|x|)`` per vector (along the last axis)."""
    scale = np.abs(x).max(axis=-1, keepdims=True)
    return np.round(127.0 * x / np.maximum(scale, 1e-12)).astype(np.int8)


def scalar_levels(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """float32 levels 0..255 of ``x`` [..., d] in the per-dimension ranges [lo, hi] (float32
    arithmetic, as sentence-transformers computes them)."""
    lo = lo.astype(np.float32, copy=False)
    steps = (hi.astype(np.float32, copy=False) - lo) / 255
    steps = np.where(steps == 0, np.float32(1), steps)
    return np.clip(np.floor((x.astype(np.float32, copy=False) - lo) / steps), 0, 255)


@lru_cache(maxsize=64)
def projection_matrix(dim: int, seed: int) -> np.ndarray:
    """float32 [dim, dim] of ±1, exactly determined by ``seed``: bit k (row-major) of the raw 64-bit
    words of ``numpy.random.PCG64(seed)`` (a stream numpy keeps stable), each word's bytes little-endian
    and each byte's bits most significant first; 1 -> +1, 0 -> -1. Read-only (cached)."""
    words = np.random.PCG64(seed).random_raw((dim * dim + 63) // 64)
    bits = np.unpackbits(words.astype("<u8").view(np.uint8))[: dim * dim].reshape(dim, dim)
    matrix = np.where(bits == 1, np.float32(1), np.float32(-1))
    matrix.flags.writeable = False
    return matrix


def binary_transform(unit: np.ndarray, calibration: Calibration) -> np.ndarray:
    """``t`` of unit vectors [..., d] under ``calibration``, whose signs ``binary``/``ubinary`` pack."""
    centred = unit - calibration.centre
    if calibration.projection is None or calibration.scale is None:
        return centred
    return (centred / calibration.scale) @ projection_matrix(calibration.dim, calibration.projection)


def codes(unit: np.ndarray, encoding: str, calibration: Calibration | None) -> np.ndarray:
    """Codes of unit vectors [..., d]: int8/uint8 [..., d] levels, or for binary/ubinary the sign
    bits, bool [..., d] (packed by :func:`pack_bits` after a concat joins them)."""
    if encoding in BITS:
        return (unit if calibration is None else binary_transform(unit, calibration)) > 0
    if calibration is None:
        q = int8_quantize(unit)
        return q if encoding == "int8" else (q.astype(np.int16) + 128).astype(np.uint8)
    levels = scalar_levels(unit, calibration.lo, calibration.hi)
    return levels.astype(np.uint8) if encoding == "uint8" else (levels - 128).astype(np.int8)


def pack_bits(bits: np.ndarray, encoding: str) -> np.ndarray:
    """Sign bits [..., d] -> ``ubinary`` uint8 [..., ceil(d/8)] or ``binary`` (the same minus 128) int8."""
    packed = np.packbits(bits, axis=-1)
    return packed if encoding == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)


def encode_float(x: np.ndarray, encoding: str) -> np.ndarray | str:
    """One vector ``x`` (float32 [d]) as ``float`` (a float32 array, written as a JSON list by
    :func:`service.wire.document.dumps_document`) or ``base64``."""
    if encoding == "float":
        return x.astype(np.float32, copy=False)
    if encoding == "base64":
        return base64.b64encode(x.astype("<f4").tobytes()).decode("ascii")
    raise ValueError(f"{encoding!r} is not a float encoding; expected float or base64")


def decode_base64_float(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f4")


def unpack_bits(code: list[int] | np.ndarray, dim: int, encoding: str = "ubinary") -> np.ndarray:
    """A ``binary`` or ``ubinary`` code (``encoding``) back to its bool [dim] sign bits."""
    raw = np.asarray(code, dtype=np.int16) + (128 if encoding == "binary" else 0)
    return np.unpackbits(raw.astype(np.uint8), axis=-1)[..., :dim].astype(bool)
