"""A deterministic fake encoder for batcher tests: no model, controllable speed and failures.

Token ids: 1 (CLS), one id per word (from a vocabulary grown on first sight), 2 (SEP). The vector of
text t under slot s is [sum of t's ids, number of t's tokens, s, 1]: it does not depend on padding
or batch mates, and a test computes the expected value with :meth:`expected`. ``calls`` records the
decoded texts and slots of every encode() call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from service.engine.backbone import BackboneSpec
from service.engine.bank import PrefixBank
from service.engine.encoder import ForwardCall, ForwardObserver, TokenizedBatch, texts_per_call
from service.engine.prefix import LoadedPrefix
from service.errors import InputTooLong

SPEC = BackboneSpec(
    model_type="bert",
    num_layers=1,
    num_heads=1,
    head_dim=2,
    hidden_size=4,
    max_positions=64,
    position_offset=0,
    pad_token_id=0,
    weights_digest="fake",
)


def fake_bank(names: Sequence[str], prefix_len: int = 2) -> PrefixBank:
    prefixes = [
        LoadedPrefix(
            n,
            f"digest-{n}",
            torch.zeros(1, 1, prefix_len, 2),
            torch.zeros(1, 1, prefix_len, 2),
            "none",
            "<test>",
            "native",
        )
        for n in names
    ]
    return PrefixBank.build(prefixes)


class FakeEncoder:
    backend = "fake"
    device = "cpu"
    dtype = "float32"
    spec = SPEC
    dim = 4
    max_input_tokens = 64
    providers = None

    def __init__(self, *, delay_s: float = 0.0, chunk_rows: int = 0) -> None:
        self.delay_s = delay_s
        self.chunk_rows = chunk_rows  # the CPU row-chunk policy, read by the batcher
        self.gate = threading.Event()  # encode() waits on it: tests hold the worker with clear()
        self.gate.set()
        self.entered = threading.Event()  # set when an encode() call starts
        self.fail_when: Callable[[list[str]], bool] = lambda texts: any("boom" in t for t in texts)
        self.calls: list[tuple[list[str], tuple[int, ...]]] = []  # (texts, slots) per encode()
        self.forward_calls = 0
        self.observer: ForwardObserver | None = None
        self.vocab: dict[str, int] = {}

    def set_observer(self, observer: ForwardObserver | None) -> None:
        self.observer = observer

    def texts_per_call(self, n_texts: int, bank: PrefixBank, slots: Sequence[int]) -> int:
        return texts_per_call(self.chunk_rows, n_texts, len(slots))

    def describe(self) -> dict[str, object]:
        return {"chunk_rows": self.chunk_rows}

    def ids(self, text: str) -> list[int]:
        return [1, *(self.vocab.setdefault(w, len(self.vocab) + 10) for w in text.split()), 2]

    def expected(self, text: str, slot: int) -> np.ndarray:
        ids = self.ids(text)[: self.max_input_tokens]
        return np.array([sum(ids), len(ids), slot, 1], dtype=np.float32)

    def tokenize(self, texts: Sequence[str], *, max_length: int, truncate: bool) -> TokenizedBatch:
        rows = [self.ids(t) for t in texts]
        for i, r in enumerate(rows):
            if len(r) > max_length and not truncate:
                raise InputTooLong(f"input {i} has {len(r)} tokens, over the limit of {max_length}")
        rows = [r[:max_length] for r in rows]
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return TokenizedBatch(ids, mask, tuple(len(r) for r in rows))

    def decoded(self, batch: TokenizedBatch) -> list[str]:
        words = {i: w for w, i in self.vocab.items()}
        return [
            " ".join(words[int(i)] for i in row[1 : n - 1])
            for row, n in zip(batch.input_ids, batch.lengths, strict=True)
        ]

    def encode(self, batch: TokenizedBatch, bank: PrefixBank, slots: Sequence[int]) -> np.ndarray:
        self.entered.set()
        self.gate.wait(timeout=10)
        start = time.perf_counter()
        time.sleep(self.delay_s)
        texts = self.decoded(batch)
        self.calls.append((texts, tuple(slots)))
        if self.fail_when(texts):
            raise RuntimeError("injected encoder failure")
        out = np.zeros((batch.size, len(slots), self.dim), dtype=np.float32)
        for b in range(batch.size):
            n = batch.lengths[b]
            for p, s in enumerate(slots):
                out[b, p] = [batch.input_ids[b, :n].sum(), n, s, 1]
        self.forward_calls += 1
        if self.observer is not None:
            rows = batch.size * len(slots)
            self.observer(
                ForwardCall(
                    texts=batch.size,
                    rows=rows,
                    tokens=rows * (batch.padded_len + int(bank.keys.shape[3])),
                    layer_rows=rows * self.spec.num_layers,
                    fan_out=0,
                    seconds=time.perf_counter() - start,
                )
            )
        return out

    def encode_plain(self, batch: TokenizedBatch) -> np.ndarray:
        raise NotImplementedError
