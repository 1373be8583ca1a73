"""The one fake of ``service.engine.encoder.Encoder``: deterministic vectors, no model, no torch calls.

Tokens are whitespace words: ``[CLS] word ids... [SEP]`` (a word's id is a hash of it). The vector of a
text under a prefix is a pseudo-random normal vector seeded by the text's token ids and the prefix
digest: it does not depend on padding, batch mates or slot order, it changes when a prefix file
changes, and a test recomputes it with :meth:`FakeEncoder.expected`.

Its spec has real prefix-file shapes (2 layers, 2 heads, head_dim 4, hidden 8), so files written with
``tests.support.prefixes`` load into a registry serving it.

Control from a test:
- ``hold()`` / ``release(calls=None)``: ``encode()`` calls block until released (all of them, or the
  next ``calls``); ``entered`` is set and ``started`` counted as soon as a call starts, before it
  blocks (so a test knows the worker is busy without sleeping);
- ``fail_with`` (+ ``fail_when``): raise that exception from ``encode()`` (for the calls whose texts
  match ``fail_when``);
- ``calls``: one :class:`EncodeCall` per ``encode()`` call (texts, slots, prefix names).

To extend the ``Encoder`` protocol, add the member here once; every test uses this class.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from service.engine.backbone import BackboneSpec
from service.engine.bank import PrefixBank
from service.engine.encoder import ForwardCall, ForwardObserver, TokenizedBatch, texts_per_call
from service.engine.prefix import LoadedPrefix
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
HOLD_LIMIT_S = 30.0  # a held encode() gives up waiting after this long (a test forgot to release)


def word_id(word: str) -> int:
    return 1000 + int.from_bytes(hashlib.sha256(word.encode()).digest()[:3], "little")


def fake_prefix(name: str, prefix_len: int = 2, spec: BackboneSpec = FAKE_SPEC) -> LoadedPrefix:
    """A native prefix of zeros for ``spec``, digest ``digest-<name>`` (its vectors differ by name)."""
    shape = (spec.num_layers, spec.num_heads, prefix_len, spec.head_dim)
    return LoadedPrefix(
        name, f"digest-{name}", torch.zeros(shape), torch.zeros(shape), "none", "<test>", "native"
    )


def fake_bank(names: Sequence[str], prefix_len: int = 2) -> PrefixBank:
    """A bank of :func:`fake_prefix` members (sorted by name, as every bank)."""
    return PrefixBank.build([fake_prefix(n, prefix_len) for n in names])


@dataclass(frozen=True)
class EncodeCall:
    """One ``encode()`` call: its texts (in batch order), slots and the slots' prefix names."""

    texts: tuple[str, ...]
    slots: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.texts)


class FakeEncoder:
    """Implements ``service.engine.encoder.Encoder``."""

    backend = "fake"
    device = "cpu"
    dtype = "float32"
    providers: list[str] | None = None

    def __init__(
        self, spec: BackboneSpec = FAKE_SPEC, *, max_input_tokens: int = 32, chunk_rows: int = 0
    ) -> None:
        self.spec = spec
        self.dim = spec.hidden_size
        self.max_input_tokens = max_input_tokens
        self.chunk_rows = chunk_rows  # rows per model call (0 = one call), read by the batcher
        self.observer: ForwardObserver | None = None  # set by the batcher (set_observer)
        self.calls: list[EncodeCall] = []
        self.forward_calls = 0
        self.fail_with: BaseException | None = None
        self.fail_when: Callable[[tuple[str, ...]], bool] = lambda texts: True
        self.entered = threading.Event()  # set when an encode() call starts
        self.started = 0  # encode() calls started (held ones included)
        self._permits: int | None = None  # encode() calls allowed to proceed; None = all
        self._words: dict[int, str] = {}
        self._lock = threading.Condition()

    # --- control -----------------------------------------------------------------------------
    def hold(self) -> None:
        """From now on encode() calls block (after setting ``entered``) until :meth:`release`."""
        with self._lock:
            self._permits = 0
            self.entered.clear()

    def release(self, calls: int | None = None) -> None:
        """Let every held and later call run (``calls=None``), or, while held, the next ``calls`` of them."""
        with self._lock:
            if calls is None or self._permits is None:
                self._permits = None
            else:
                self._permits += calls
            self._lock.notify_all()

    def _wait_for_permit(self) -> None:
        with self._lock:
            self.started += 1
            self.entered.set()
            allowed = self._lock.wait_for(lambda: self._permits is None or self._permits > 0, HOLD_LIMIT_S)
            assert allowed, f"encode() held for {HOLD_LIMIT_S} s: the test never released it"
            if self._permits is not None:
                self._permits -= 1

    # --- the reference -----------------------------------------------------------------------
    def ids(self, text: str) -> list[int]:
        """Token ids of ``text``, untruncated."""
        ids = [word_id(w) for w in text.split()]
        with self._lock:
            self._words.update(zip(ids, text.split(), strict=True))
        return [CLS, *ids, SEP]

    def vector(self, ids: Sequence[int] | np.ndarray, tag: str) -> np.ndarray:
        """The vector of token ids ``ids`` under ``tag`` (a prefix digest, or "plain")."""
        seed = hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes() + tag.encode()).digest()
        rng = np.random.default_rng(int.from_bytes(seed[:8], "little"))
        return rng.standard_normal(self.dim).astype(np.float32)

    def expected(self, text: str, prefix: LoadedPrefix, max_length: int | None = None) -> np.ndarray:
        """What ``encode()`` returns for ``text`` under ``prefix`` (truncated to ``max_length``,
        default ``max_input_tokens``); unnormalized."""
        return self.vector(self.truncated(self.ids(text), max_length or self.max_input_tokens), prefix.digest)

    @staticmethod
    def truncated(ids: list[int], max_length: int) -> list[int]:
        return ids if len(ids) <= max_length else [*ids[: max_length - 1], SEP]

    def decoded(self, batch: TokenizedBatch) -> tuple[str, ...]:
        """The texts of ``batch`` (truncated ones without their cut words)."""
        return tuple(
            " ".join(self._words[int(i)] for i in row[1 : n - 1])
            for row, n in zip(batch.input_ids, batch.lengths, strict=True)
        )

    # --- the Encoder protocol ----------------------------------------------------------------
    def set_observer(self, observer: ForwardObserver | None) -> None:
        self.observer = observer

    def texts_per_call(self, n_texts: int, bank: PrefixBank, slots: Sequence[int]) -> int:
        """The engine's rule for all-layer prefixes (the fake has no trunk)."""
        return texts_per_call(self.chunk_rows, n_texts, len(slots))

    def describe(self) -> dict[str, object]:
        return {"chunk_rows": self.chunk_rows}

    def tokenize(self, texts: Sequence[str], *, max_length: int, truncate: bool) -> TokenizedBatch:
        rows = []
        for i, text in enumerate(texts):
            ids = self.ids(text)
            if len(ids) > max_length and not truncate:
                raise InputTooLong(
                    f"input {i} has {len(ids)} tokens, over the limit of {max_length}; "
                    "shorten it or send truncate: true"
                )
            rows.append(self.truncated(ids, max_length))
        width = max((len(r) for r in rows), default=0)
        input_ids = np.full((len(rows), width), self.spec.pad_token_id, dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return TokenizedBatch(input_ids, mask, tuple(len(r) for r in rows))

    def encode(self, batch: TokenizedBatch, bank: PrefixBank, slots: Sequence[int]) -> np.ndarray:
        texts = self.decoded(batch)
        with self._lock:
            self.calls.append(EncodeCall(texts, tuple(slots), tuple(bank.prefixes[s].name for s in slots)))
        self._wait_for_permit()
        start = time.perf_counter()
        if self.fail_with is not None and self.fail_when(texts):
            raise self.fail_with
        out = np.zeros((batch.size, len(slots), self.dim), dtype=np.float32)
        for b, n in enumerate(batch.lengths):
            ids = batch.input_ids[b, :n]
            for p, s in enumerate(slots):
                out[b, p] = self.vector(ids, bank.prefixes[s].digest)
        rows = batch.size * len(slots)
        self._report(
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

    def _report(self, call: ForwardCall) -> None:
        """One model call done: count it and tell the observer (the batcher's)."""
        with self._lock:
            self.forward_calls += 1
        if self.observer is not None:
            self.observer(call)
