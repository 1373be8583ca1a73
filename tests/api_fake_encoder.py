"""A deterministic fake of the whole Encoder protocol for HTTP tests: no model, no torch calls.

Unlike the batcher tests' fake (tests/unit/fake_encoder.py), its spec has real prefix-file shapes
(so ``write_prefix``/``native_bytes`` files load), and each prefix's vector depends on its digest.

Tokens are whitespace words (plus [CLS]/[SEP]); the vector of a text under a prefix is a
pseudo-random normal vector seeded by the text's token ids and the prefix digest, so tests can
recompute expected vectors exactly (``embed_sync(fake, bank, names, texts)``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence

import numpy as np

from service.engine.backbone import BackboneSpec
from service.engine.bank import PrefixBank
from service.engine.encoder import ForwardCall, ForwardObserver, TokenizedBatch
from service.errors import InputTooLong

FAKE_SPEC = BackboneSpec(
    model_type="bert",
    num_layers=2,
    num_heads=2,
    head_dim=4,
    hidden_size=8,
    max_positions=64,
    position_offset=0,
    pad_token_id=0,
    weights_digest="fake-weights",
)
CLS, SEP = 101, 102


def word_id(word: str) -> int:
    return 1000 + int.from_bytes(hashlib.sha256(word.encode()).digest()[:3], "little")


class FakeEncoder:
    """Implements ``service.engine.encoder.Encoder``; records every encode call."""

    backend = "fake"
    device = "cpu"
    dtype = "float32"
    providers = None

    def __init__(self, spec: BackboneSpec = FAKE_SPEC, max_input_tokens: int = 32) -> None:
        self.spec = spec
        self.dim = spec.hidden_size
        self.max_input_tokens = max_input_tokens
        self.calls: list[tuple[int, tuple[str, ...]]] = []  # (texts, prefix names) per encode call
        self.fail_with: BaseException | None = None  # raised by the next encode calls while set
        self.delay_s = 0.0  # per encode call: lets tests hold a request in flight
        self.observer: ForwardObserver | None = None
        self._lock = threading.Lock()

    def set_observer(self, observer: ForwardObserver | None) -> None:
        self.observer = observer

    def texts_per_call(self, n_texts: int, bank: PrefixBank, slots: Sequence[int]) -> int:
        return max(1, n_texts)  # one call per batch

    def describe(self) -> dict[str, object]:
        return {}

    def tokenize(self, texts: Sequence[str], *, max_length: int, truncate: bool) -> TokenizedBatch:
        rows = []
        for i, text in enumerate(texts):
            ids = [CLS, *(word_id(w) for w in text.split()), SEP]
            if len(ids) > max_length:
                if not truncate:
                    raise InputTooLong(
                        f"input {i} has {len(ids)} tokens, over the limit of {max_length}; "
                        "shorten it or send truncate: true"
                    )
                ids = [*ids[: max_length - 1], SEP]
            rows.append(ids)
        width = max((len(r) for r in rows), default=0)
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return TokenizedBatch(input_ids, mask, tuple(len(r) for r in rows))

    def vector(self, ids: Sequence[int], tag: str) -> np.ndarray:
        seed = hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes() + tag.encode()).digest()
        return (
            np.random.default_rng(int.from_bytes(seed[:8], "little"))
            .standard_normal(self.dim)
            .astype(np.float32)
        )

    def _rows(self, batch: TokenizedBatch) -> list[list[int]]:
        return [list(batch.input_ids[i, :n]) for i, n in enumerate(batch.lengths)]

    def encode(self, batch: TokenizedBatch, bank: PrefixBank, slots: Sequence[int]) -> np.ndarray:
        names = tuple(bank.prefixes[s].name for s in slots)
        with self._lock:
            self.calls.append((batch.size, names))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        out = np.zeros((batch.size, len(slots), self.dim), dtype=np.float32)
        for b, ids in enumerate(self._rows(batch)):
            for p, s in enumerate(slots):
                out[b, p] = self.vector(ids, bank.prefixes[s].digest)
        if self.observer is not None:
            rows = batch.size * len(slots)
            layers = self.spec.num_layers
            self.observer(ForwardCall(batch.size, rows, rows * batch.padded_len, rows * layers, 0, 0.0))
        return out

    def encode_plain(self, batch: TokenizedBatch) -> np.ndarray:
        return np.stack([self.vector(ids, "plain") for ids in self._rows(batch)])
