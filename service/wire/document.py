"""The ``POST /embed`` response document (also printed by ``python -m service embed --json``) and
the one JSON writer of every vector-carrying response."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from service.engine.prefix import LoadedPrefix
from service.errors import InferenceFailed
from service.wire.encodings import BITS, QUANTIZED, UNCALIBRATED, codes, encode_float, l2_normalize, pack_bits

if TYPE_CHECKING:
    from service.engine.calibration import Calibration


def render_embed_document(
    *,
    model: str,
    prefixes: Sequence[LoadedPrefix],
    vectors: np.ndarray,
    prompt_tokens: int,
    calibrations: Sequence[Calibration | None],
    combine: str = "separate",
    normalize: bool = True,
    encoding: str = "float",
) -> dict[str, Any]:
    """The ``POST /embed`` response body for ``vectors`` [B, P, dim] computed under ``prefixes``.

    ``calibrations``: per prefix, the calibration the quantized encodings use (None: the fallback);
    for those encodings each ``prefixes`` entry names it (its digest, or ``"uncalibrated"``).
    Vectors stay numpy arrays in the document; :func:`dumps_document` writes them."""
    if not np.isfinite(vectors).all():  # never serve a wrong vector (JSON would write NaN as null)
        raise InferenceFailed("the model produced a non-finite vector; see the server log")
    names = [p.name for p in prefixes]
    columns: list[Any]  # per prefix (or one concat): B encoded vectors
    if encoding in QUANTIZED:
        columns = quantized_codes(vectors, encoding, calibrations, combine)
    else:
        columns = _float_columns(vectors, encoding, combine, normalize)
    data: list[dict[str, Any]]
    if combine == "concat":
        data = [{"index": i, "embedding": e} for i, e in enumerate(columns[0])]
    else:
        data = [
            {"index": i, "embeddings": {n: col[i] for n, col in zip(names, columns, strict=True)}}
            for i in range(vectors.shape[0])
        ]
    described = []
    for p, cal in zip(prefixes, calibrations, strict=True):
        entry: dict[str, Any] = {"name": p.name, "digest": p.digest, "dim": int(vectors.shape[-1])}
        if encoding in QUANTIZED:
            entry["calibration"] = cal.digest if cal is not None else UNCALIBRATED
        described.append(entry)
    return {"model": model, "prefixes": described, "data": data, "usage": usage(prompt_tokens)}


def _float_columns(vectors: np.ndarray, encoding: str, combine: str, normalize: bool) -> list[Any]:
    """float/base64: per prefix (or one concat) column of B encoded vectors."""
    if normalize:
        # Each prefix's vector is unit-length; a concat is scaled by 1/sqrt(P) so it is unit-length too
        # while every prefix keeps an equal share.
        vectors = l2_normalize(vectors)
        if combine == "concat" and vectors.shape[1]:
            vectors = vectors / np.sqrt(vectors.shape[1])
    if combine == "concat":
        return [[encode_float(row.reshape(-1), encoding) for row in vectors]]
    return [[encode_float(v, encoding) for v in vectors[:, p]] for p in range(vectors.shape[1])]


def quantized_codes(
    vectors: np.ndarray, encoding: str, calibrations: Sequence[Calibration | None], combine: str
) -> list[Any]:
    """int8/uint8/binary/ubinary codes of ``vectors`` [B, P, dim] as a response carries them: per
    prefix, the codes of its unit vectors [B, code length], or (``combine`` concat) one array of the
    joined codes."""
    unit = l2_normalize(vectors)
    parts = [codes(unit[:, p], encoding, cal) for p, cal in enumerate(calibrations)]
    if combine == "concat":
        parts = [np.concatenate(parts, axis=-1)] if parts else []
    return [pack_bits(c, encoding) if encoding in BITS else c for c in parts]


def usage(prompt_tokens: int) -> dict[str, int]:
    """The ``usage`` object of every response (OpenAI's shape: embeddings have no completion tokens)."""
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}


def dumps_document(doc: dict[str, Any]) -> bytes:
    """A response document as JSON bytes. orjson writes numpy arrays directly (float32 as their
    shortest round-trip form), ~30x faster than stdlib ``json`` over ``tolist()`` for 32 x 384 numbers
    and about half the bytes (BENCHMARKS.md, "Request path")."""
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
