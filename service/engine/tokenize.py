"""Tokenization shared by every backend, with the per-request token limit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from service.engine.backbone import BackboneSpec
from service.engine.encoder import TokenizedBatch
from service.errors import InputTooLong


def text_token_limit(spec: BackboneSpec, max_input_tokens: int, max_shift: int) -> int:
    """Longest text (special tokens included) that fits the positions left after the prefix shift."""
    return min(max_input_tokens, spec.max_positions - spec.position_offset - max_shift)


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_length: int, truncate: bool
) -> TokenizedBatch:
    enc = tokenizer(
        list(texts),
        padding=True,
        truncation=truncate,
        max_length=max_length if truncate else None,
        return_tensors="np",
        return_token_type_ids=False,
        verbose=False,
    )
    mask = enc["attention_mask"].astype(np.int64)
    lengths = tuple(int(n) for n in mask.sum(axis=1))
    if not truncate:
        for i, n in enumerate(lengths):
            if n > max_length:
                raise InputTooLong(
                    f"input {i} has {n} tokens, over the limit of {max_length}; "
                    "shorten it or send truncate: true"
                )
    return TokenizedBatch(enc["input_ids"].astype(np.int64), mask, lengths)
