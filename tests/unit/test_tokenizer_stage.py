"""The batcher's tokenizer stage (service/batching/tokenizing.py) with a fake encoder: the character
cap before tokenizing, small requests served between the slices of a large one, and a tokenizer
failure isolated to its own request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import pytest

from service.batching import Batcher
from service.batching.tokenizing import SLICE_CHARS, default_max_input_chars, text_problem
from service.engine.encoder import TokenizedBatch
from service.errors import InputTooLong, InvalidInput
from tests.support.batching import run_scenario
from tests.support.fake_encoder import FakeEncoder, fake_bank
from tests.support.waiting import async_wait_until as wait_until

T = TypeVar("T")
BANK = fake_bank(["alpha", "beta"])


class RecordingEncoder(FakeEncoder):
    """The fake, with every tokenizer call recorded; the first call touching a text that contains
    ``hold_marker`` blocks until ``release`` is set. Like the real tokenizers, it raises on text that
    is not valid Unicode (a lone surrogate)."""

    def __init__(self, hold_marker: str = "HOLD") -> None:
        super().__init__()
        self.hold_marker = hold_marker
        self.release = threading.Event()
        self.holding = threading.Event()
        self.tokenized: list[list[str]] = []

    def tokenize(self, texts: Sequence[str], *, max_length: int, truncate: bool) -> TokenizedBatch:
        self.tokenized.append(list(texts))
        if any(self.hold_marker in t for t in texts) and not self.holding.is_set():
            self.holding.set()
            self.release.wait(10)
        for t in texts:
            t.encode("utf-8")  # UnicodeEncodeError, as the Rust tokenizer's TypeError
        return super().tokenize(texts, max_length=max_length, truncate=truncate)


def test_a_lone_surrogate_fails_only_its_own_request_tokenized_in_the_same_call() -> None:
    enc = RecordingEncoder()
    batcher = Batcher(enc)
    good = [f"good text number {i}" for i in range(6)]

    async def scenario() -> None:
        await batcher.start()
        first = asyncio.ensure_future(batcher.embed(["HOLD the tokenizer"], BANK, [0, 1]))
        await wait_until(enc.holding.is_set)
        goods = [asyncio.ensure_future(batcher.embed([t], BANK, [0, 1])) for t in good[:3]]
        bad = asyncio.ensure_future(batcher.embed(["fine", "bad \ud800 text"], BANK, [0, 1]))
        goods += [asyncio.ensure_future(batcher.embed([t], BANK, [0, 1])) for t in good[3:]]
        await wait_until(lambda: batcher.queue_depth == 8)
        enc.release.set()
        with pytest.raises(InvalidInput) as err:
            await bad
        assert "input 1" in err.value.message
        assert "lone surrogate" in err.value.message
        assert "U+D800" in err.value.message
        outs = await asyncio.gather(first, *goods)
        for text, out in zip(good, outs[1:], strict=True):
            np.testing.assert_array_equal(
                out.vectors[0], [enc.expected(text, BANK.prefixes[0]), enc.expected(text, BANK.prefixes[1])]
            )
        await batcher.stop()

    run_scenario(scenario)
    # the bad request was first tokenized together with the good ones (then alone)
    assert any(any("\ud800" in t for t in call) and "good text number 0" in call for call in enc.tokenized)


def test_text_problem_names_a_lone_surrogate_and_passes_valid_text() -> None:
    assert text_problem("ok \U0001f600 emoji") is None
    problem = text_problem("ab\udc00")
    assert problem is not None
    assert "U+DC00 at character 2" in problem


def test_input_over_the_character_cap_is_refused_without_tokenizing_or_cut_when_truncating() -> None:
    enc = RecordingEncoder()
    cap = default_max_input_chars(enc.max_input_tokens)
    huge = "word " * (cap // 2)  # 2.5 x the cap
    batcher = Batcher(enc)

    async def scenario() -> None:
        await batcher.start()
        with pytest.raises(InputTooLong) as err:
            await batcher.embed(["fine", huge], BANK, [0], truncate=False)
        assert "input 1" in err.value.message
        assert f"limit of {cap}" in err.value.message
        assert "max_input_chars" in err.value.message
        small = await batcher.embed(["a small one"], BANK, [0])
        np.testing.assert_array_equal(small.vectors[0, 0], enc.expected("a small one", BANK.prefixes[0]))
        cut = await batcher.embed([huge], BANK, [0])  # truncate: cut to the cap, then to the token limit
        np.testing.assert_array_equal(cut.vectors[0, 0], enc.expected(huge, BANK.prefixes[0]))
        await batcher.stop()

    run_scenario(scenario)
    assert not any(huge in call for call in enc.tokenized)  # never tokenized in full
    assert max(len(t) for call in enc.tokenized for t in call) == cap


def test_a_small_request_is_served_between_the_slices_of_a_large_one() -> None:
    enc = RecordingEncoder()
    batcher = Batcher(enc)
    piece = "HOLD " + "w " * 400  # ~800 characters (under the cap); the first slice holds
    large = [piece.replace("HOLD", f"t{i}") if i else piece for i in range(3 * SLICE_CHARS // len(piece))]
    assert len(piece) <= default_max_input_chars(enc.max_input_tokens)

    async def scenario() -> None:
        await batcher.start()
        big = asyncio.ensure_future(batcher.embed(large, BANK, [0]))
        await wait_until(enc.holding.is_set)  # the large request's first slice is in the tokenizer
        small = asyncio.ensure_future(batcher.embed(["small request"], BANK, [0]))
        await wait_until(lambda: batcher.queue_depth == 2)
        enc.release.set()
        out = await small
        np.testing.assert_array_equal(out.vectors[0, 0], enc.expected("small request", BANK.prefixes[0]))
        assert (await big).vectors.shape == (len(large), 1, enc.dim)
        await batcher.stop()

    run_scenario(scenario)
    calls = [c for c in enc.tokenized if c != ["small request"]]
    small_at = enc.tokenized.index(["small request"])
    assert len(calls) >= 3
    assert all(sum(map(len, c)) <= SLICE_CHARS for c in calls)
    assert 0 < small_at < len(enc.tokenized) - 1  # between the large request's slices
