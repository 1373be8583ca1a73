"""The engine called directly, without the batcher: tokenize under the right limit, one ``encode``.

What the batcher computes for a request, as a plain function: the independent reference of the tests
and the path of one-shot tools (the soak's expected vectors). Serving code goes through
:mod:`service.pipeline` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.engine.bank import PrefixBank
from service.engine.encoder import Encoder
from service.engine.tokenize import text_token_limit


def token_limit(encoder: Encoder, bank: PrefixBank, slots: Sequence[int]) -> int:
    """Longest text (tokens) every one of ``slots`` can take: the model's limit less any position shift."""
    return text_token_limit(encoder.spec, encoder.max_input_tokens, bank.max_shift(slots))


def embed_sync(
    encoder: Encoder,
    bank: PrefixBank,
    names: Sequence[str],
    texts: Sequence[str],
    *,
    truncate: bool = True,
    max_tokens: int | None = None,
) -> tuple[np.ndarray, int]:
    """Vectors [B, P, dim] (unnormalized) and the prompt token count, in one encoder call; texts are
    cut at the service's token limit, or at ``max_tokens`` when that is lower."""
    slots = bank.indices(names)
    limit = token_limit(encoder, bank, slots)
    limit = limit if max_tokens is None else min(limit, max_tokens)
    batch = encoder.tokenize(texts, max_length=limit, truncate=truncate)
    return encoder.encode(batch, bank, slots), sum(batch.lengths)
