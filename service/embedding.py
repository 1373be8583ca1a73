"""From texts to the ``POST /embed`` document: choose prefixes, encode, normalize, render.

Used by the HTTP routes (through the batcher) and by ``python -m service embed`` alike, so the
CLI's ``--json`` prints exactly what the server returns.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import orjson

from service.engine.bank import PrefixBank
from service.engine.encoder import Encoder
from service.engine.prefix import BASE_NAME, LoadedPrefix
from service.engine.quantize import encode_vector, l2_normalize
from service.engine.tokenize import text_token_limit
from service.errors import InferenceFailed, NoActivePrefixes, PrefixDisabled, shown_list


def choose_prefixes(
    bank: PrefixBank,
    enabled: Collection[str],
    requested: Sequence[str] | None,
    *,
    include_base: bool = True,
) -> list[str]:
    """``requested=None`` -> every enabled prefix in bank order (``base`` first, and only when
    ``include_base``); else the request's order, all enabled (``base`` may always be asked for)."""
    if requested is None:
        names = [n for n in bank.names if n in enabled and (include_base or n != BASE_NAME)]
        if not names:
            raise NoActivePrefixes(
                "no prefix is enabled; enable one with PATCH /prefixes or add a prefix file"
            )
        return names
    bank.indices(requested)  # unknown names -> PrefixNotFound, listing the known ones
    disabled = [n for n in requested if n not in enabled]
    if disabled:
        raise PrefixDisabled(f"prefix(es) {shown_list(disabled)} are disabled; enable with PATCH /prefixes")
    return list(requested)


def token_limit(encoder: Encoder, bank: PrefixBank, slots: Sequence[int]) -> int:
    return text_token_limit(encoder.spec, encoder.max_input_tokens, bank.max_shift(slots))


def embed_sync(
    encoder: Encoder, bank: PrefixBank, names: Sequence[str], texts: Sequence[str], *, truncate: bool = True
) -> tuple[np.ndarray, int]:
    """Vectors [B, P, dim] (unnormalized) and the prompt token count, in one encoder call."""
    slots = bank.indices(names)
    batch = encoder.tokenize(texts, max_length=token_limit(encoder, bank, slots), truncate=truncate)
    return encoder.encode(batch, bank, slots), sum(batch.lengths)


def render_embed_document(
    *,
    model: str,
    prefixes: Sequence[LoadedPrefix],
    vectors: np.ndarray,
    prompt_tokens: int,
    combine: str = "separate",
    normalize: bool = True,
    encoding: str = "float",
) -> dict[str, Any]:
    """The ``POST /embed`` response body for ``vectors`` [B, P, dim] computed under ``prefixes``.

    Vectors stay numpy arrays (float32 / int8) in the document; :func:`dumps_document` writes them."""
    if not np.isfinite(vectors).all():  # never serve a wrong vector (JSON would write NaN as null)
        raise InferenceFailed("the model produced a non-finite vector; see the server log")
    if normalize:
        # Each prefix's vector is unit-length; a concat is scaled by 1/sqrt(P) so it is unit-length too
        # while every prefix keeps an equal share.
        vectors = l2_normalize(vectors)
        if combine == "concat" and vectors.shape[1]:
            vectors = vectors / np.sqrt(vectors.shape[1])
    data: list[dict[str, Any]] = []
    for i, row in enumerate(vectors):
        if combine == "concat":
            data.append({"index": i, "embedding": encode_vector(row.reshape(-1), encoding)})
        else:
            data.append(
                {
                    "index": i,
                    "embeddings": {
                        p.name: encode_vector(v, encoding) for p, v in zip(prefixes, row, strict=True)
                    },
                }
            )
    return {
        "model": model,
        "prefixes": [{"name": p.name, "digest": p.digest, "dim": int(vectors.shape[-1])} for p in prefixes],
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def dumps_document(doc: dict[str, Any]) -> bytes:
    """A response document as JSON bytes. orjson writes numpy arrays directly (float32 as their
    shortest round-trip form), ~30x faster than stdlib ``json`` over ``tolist()`` for 32 x 384 numbers
    and about half the bytes (BENCHMARKS.md, "Request path")."""
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
