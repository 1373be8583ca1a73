"""The encoder interface shared by the torch and ONNX backends (and the fake used in tests)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from service.engine.backbone import BackboneSpec
from service.engine.bank import PrefixBank


@dataclass(frozen=True)
class TokenizedBatch:
    """Right-padded token ids of B texts. ``lengths[i]`` = real tokens of text i."""

    input_ids: np.ndarray  # int64 [B, T]
    attention_mask: np.ndarray  # int64 [B, T]
    lengths: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def padded_len(self) -> int:
        return int(self.input_ids.shape[1])

    def take(self, rows: Sequence[int]) -> TokenizedBatch:
        """Sub-batch of ``rows``, re-padded to its own longest text."""
        lengths = tuple(self.lengths[r] for r in rows)
        t = max(lengths, default=0)
        idx = np.asarray(rows, dtype=np.int64)
        return TokenizedBatch(self.input_ids[idx, :t], self.attention_mask[idx, :t], lengths)


def texts_per_call(chunk_rows: int, n_texts: int, n_prefixes: int) -> int:
    """Texts per model call under a row budget (0 = one call for the whole batch).

    All prefixes of one text always share a call, so chunks split between texts.
    """
    if not chunk_rows:
        return n_texts
    return max(1, chunk_rows // max(1, n_prefixes))


def call_chunks(batch: TokenizedBatch, chunk_rows: int, n_prefixes: int) -> list[TokenizedBatch]:
    """``batch`` split into the sub-batches of one model call each (the whole batch when it fits)."""
    per_call = texts_per_call(chunk_rows, batch.size, n_prefixes)
    if per_call >= batch.size:
        return [batch]
    return [batch.take(range(i, min(i + per_call, batch.size))) for i in range(0, batch.size, per_call)]


class Encoder(Protocol):
    """B texts x P prefixes -> [B, P, dim] pooled vectors, in as few forward calls as allowed."""

    spec: BackboneSpec
    dim: int
    backend: str
    device: str
    dtype: str
    max_input_tokens: int

    def tokenize(self, texts: Sequence[str], *, max_length: int, truncate: bool) -> TokenizedBatch: ...

    def encode(self, batch: TokenizedBatch, bank: PrefixBank, slots: Sequence[int]) -> np.ndarray:
        """float32 [B, len(slots), dim]: text b under prefix ``bank.prefixes[slots[p]]``; unnormalized."""
        ...

    def encode_plain(self, batch: TokenizedBatch) -> np.ndarray:
        """float32 [B, dim]: the backbone without any prefix."""
        ...
