"""The batcher with a fake encoder: coalescing, token budget, failures, deadlines, drain."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.batching import Batcher
from service.batching.prometheus import register_batcher_metrics
from service.engine.bank import PrefixBank
from service.errors import DeadlineExceeded, InferenceFailed, InputTooLong, NotReady, QueueFull
from tests.support.batching import held_request, run_scenario
from tests.support.fake_encoder import FakeEncoder, fake_bank
from tests.support.waiting import async_wait_until as wait_until

T = TypeVar("T")
BANK = fake_bank(["alpha", "beta", "gamma"])


def want(enc: FakeEncoder, text: str, slots: Sequence[int], bank: PrefixBank = BANK) -> np.ndarray:
    """[len(slots), dim]: what the batcher must return for ``text`` under ``slots``."""
    return np.stack([enc.expected(text, bank.prefixes[s]) for s in slots])


def hold(enc: FakeEncoder) -> None:
    """Make encode() calls block until ``enc.release()``."""
    enc.hold()


def test_concurrent_requests_are_coalesced_and_each_gets_its_own_vectors() -> None:
    enc = FakeEncoder()
    batcher = Batcher(enc)
    texts = [f"text number {i} " + "w " * (i % 7) for i in range(32)]

    async def scenario() -> list[np.ndarray]:
        await batcher.start()
        first = await held_request(batcher, enc, BANK, [0, 2], "warm up")  # the worker is busy with it
        rest = [asyncio.ensure_future(batcher.embed([t], BANK, [0, 2])) for t in texts]
        await wait_until(lambda: batcher.waiting_texts() == 32)  # all tokenized, ready to coalesce
        enc.release()
        await first
        outs = [o.vectors for o in await asyncio.gather(*rest)]
        await batcher.stop()
        return outs

    outs = run_scenario(scenario)
    for text, vec in zip(texts, outs, strict=True):
        np.testing.assert_array_equal(vec, want(enc, text, [0, 2])[None])
    assert batcher.stats.forward_calls == 2 < 32  # the warm-up alone, then all 32 together
    assert sorted(c.size for c in enc.calls) == [1, 32]


def test_one_request_with_all_prefixes_costs_one_forward_call() -> None:
    enc = FakeEncoder()
    batcher = Batcher(enc)
    texts = ["a short one", "a somewhat longer text here", "mid size text"]

    async def scenario() -> np.ndarray:
        out = await batcher.embed(texts, BANK, [2, 0, 1])
        await batcher.stop()
        assert out.prompt_tokens == sum(len(enc.ids(t)) for t in texts)
        return out.vectors

    vectors = run_scenario(scenario)
    assert batcher.stats.forward_calls == 1
    assert enc.calls[0].slots == (2, 0, 1)
    for i, text in enumerate(texts):  # input order and slot order restored after sorting by length
        np.testing.assert_array_equal(vectors[i], want(enc, text, (2, 0, 1)))


def test_token_budget_splits_a_large_request_between_texts_never_between_prefixes() -> None:
    enc = FakeEncoder()
    # every text here is 5 tokens; 3 prefixes of padded length 2: one text = 3 x 7 = 21 tokens
    batcher = Batcher(enc, max_batch_tokens=50)
    texts = [f"t{i} b c" for i in range(5)]

    async def scenario() -> np.ndarray:
        out = await batcher.embed(texts, BANK, [0, 1, 2])
        await batcher.stop()
        return out.vectors

    vectors = run_scenario(scenario)
    assert [c.size for c in enc.calls] == [2, 2, 1]
    assert all(c.slots == (0, 1, 2) for c in enc.calls)
    for i, text in enumerate(texts):
        np.testing.assert_array_equal(vectors[i], want(enc, text, (0, 1, 2)))


def test_row_chunks_answer_each_request_as_soon_as_its_chunk_is_done() -> None:
    enc = FakeEncoder(chunk_rows=4)  # 4 rows = 2 texts x 2 prefixes per call
    batcher = Batcher(enc)
    texts = ["a", "b b", "c c c", "d d d d", "e e e e e", "f f f f f f"]
    done: list[str] = []

    async def one(text: str) -> None:
        out = await batcher.embed([text], BANK, [0, 1])
        np.testing.assert_array_equal(out.vectors[0], want(enc, text, (0, 1)))
        done.append(text)

    async def scenario() -> None:
        blocker = await held_request(batcher, enc, BANK, [0, 1])
        futs = [asyncio.ensure_future(one(t)) for t in reversed(texts)]  # longest first
        await wait_until(lambda: batcher.waiting_texts() == 6)
        enc.release(calls=2)  # the blocker and the first chunk; the second is held
        for n in (2, 4, 6):  # a chunk's requests are answered while the next chunk is still held
            await wait_until(lambda: len(done) == n)  # noqa: B023 (awaited before n changes)
            assert sorted(done) == sorted(texts[:n])
            enc.release(calls=1)
        enc.release()
        await asyncio.gather(blocker, *futs)
        await batcher.stop()

    run_scenario(scenario)
    # one planned batch of 6 texts, sorted by length, run as 3 calls of 2 texts
    assert [list(c.texts) for c in enc.calls[1:]] == [
        ["a", "b b"],
        ["c c c", "d d d d"],
        ["e e e e e", "f f f f f f"],
    ]


def test_failing_batch_fails_its_requests_and_the_next_batch_succeeds() -> None:
    enc = FakeEncoder()
    enc.fail_with = RuntimeError("injected encoder failure")
    enc.fail_when = lambda texts: any("boom" in t for t in texts)
    batcher = Batcher(enc)

    async def scenario() -> None:
        blocker = await held_request(batcher, enc, BANK, [0])
        bad = asyncio.ensure_future(batcher.embed(["boom now"], BANK, [0]))
        mate = asyncio.ensure_future(batcher.embed(["innocent bystander"], BANK, [0]))
        await wait_until(lambda: batcher.waiting_texts() == 2)
        enc.release()
        await blocker
        for fut in (bad, mate):  # the same forward call: both fail, with a generic 500
            with pytest.raises(InferenceFailed) as err:
                await fut
            assert err.value.status_code == 500
            assert "injected" not in err.value.message
        after = await batcher.embed(["all good"], BANK, [1])
        np.testing.assert_array_equal(after.vectors[0, 0], want(enc, "all good", [1])[0])
        await batcher.stop()

    run_scenario(scenario)
    assert batcher.stats.failed_batches == 1
    assert batcher.stats.failed_requests == 2


def test_full_queue_answers_429_with_retry_after() -> None:
    enc = FakeEncoder()
    batcher = Batcher(enc, max_queue=2)

    async def scenario() -> None:
        hold(enc)
        admitted = [asyncio.ensure_future(batcher.embed([f"t{i}"], BANK, [0])) for i in range(2)]
        await wait_until(enc.entered.is_set)
        with pytest.raises(QueueFull) as err:
            await batcher.embed(["one too many"], BANK, [0])
        assert err.value.status_code == 429
        assert err.value.headers == {"Retry-After": str(err.value.retry_after)}
        assert err.value.retry_after >= 1
        enc.release()
        await asyncio.gather(*admitted)
        await batcher.embed(["fits again"], BANK, [0])
        await batcher.stop()

    run_scenario(scenario)
    assert batcher.stats.dropped == {"queue_full": 1}


def test_request_past_its_deadline_gets_504_and_never_runs() -> None:
    enc = FakeEncoder()
    batcher = Batcher(enc, timeout_s=0.3)

    async def scenario() -> None:
        blocker = await held_request(batcher, enc, BANK, [0])
        with pytest.raises(DeadlineExceeded) as err:
            await batcher.embed(["too late"], BANK, [0])
        assert err.value.status_code == 504
        enc.release()
        with pytest.raises(DeadlineExceeded):  # the blocker itself outlived its deadline
            await blocker
        await batcher.embed(["next"], BANK, [0])
        await batcher.stop()

    run_scenario(scenario)
    assert [c.texts for c in enc.calls] == [("hold",), ("next",)]
    assert batcher.stats.dropped == {"deadline": 2}


def test_cancelled_request_is_dropped_from_the_queue() -> None:
    enc = FakeEncoder()
    batcher = Batcher(enc)

    async def scenario() -> None:
        blocker = await held_request(batcher, enc, BANK, [0])
        gone = asyncio.ensure_future(batcher.embed(["client went away"], BANK, [0]))
        stays = asyncio.ensure_future(batcher.embed(["client stays"], BANK, [0]))
        await wait_until(lambda: batcher.queue_depth == 3)
        gone.cancel()
        await wait_until(lambda: batcher.queue_depth == 2 and batcher.waiting_texts() == 1)
        enc.release()
        await blocker
        await stays
        assert gone.cancelled()
        await batcher.stop()

    run_scenario(scenario)
    assert [c.texts for c in enc.calls] == [("hold",), ("client stays",)]
    assert batcher.stats.dropped == {"cancelled": 1}


def test_too_long_input_fails_only_its_own_request() -> None:
    enc = FakeEncoder(max_input_tokens=64)
    batcher = Batcher(enc)
    long_text = " ".join(["w"] * 80)  # over the encoder's 64 tokens

    async def scenario() -> None:
        blocker = await held_request(batcher, enc, BANK, [0])
        strict = asyncio.ensure_future(batcher.embed([long_text], BANK, [0], truncate=False))
        fine = asyncio.ensure_future(batcher.embed(["fine"], BANK, [0], truncate=False))
        truncated = asyncio.ensure_future(batcher.embed([long_text], BANK, [0]))
        await wait_until(lambda: strict.done() and batcher.waiting_texts() == 2)
        enc.release()
        with pytest.raises(InputTooLong):
            await strict
        await asyncio.gather(blocker, fine)
        assert (await truncated).prompt_tokens == 64
        await batcher.stop()

    run_scenario(scenario)


def test_different_bank_snapshots_never_share_a_forward_call() -> None:
    enc = FakeEncoder()
    batcher = Batcher(enc)
    other = fake_bank(["alpha", "beta", "delta"])

    async def scenario() -> None:
        blocker = await held_request(batcher, enc, BANK, [0])
        futs = [
            asyncio.ensure_future(batcher.embed([f"t{i}"], BANK if i % 2 else other, [0])) for i in range(6)
        ]
        await wait_until(lambda: batcher.waiting_texts() == 6)
        enc.release()
        await asyncio.gather(blocker, *futs)
        await batcher.stop()

    run_scenario(scenario)
    assert sorted(sorted(c.texts) for c in enc.calls[1:]) == [["t0", "t2", "t4"], ["t1", "t3", "t5"]]


@pytest.mark.parametrize(("policy", "calls"), [("group", 4), ("union", 2)])
def test_slot_policy_groups_or_unions_prefix_sets(policy: str, calls: int) -> None:
    enc = FakeEncoder()
    batcher = Batcher(enc, slot_policy=policy)  # type: ignore[arg-type]
    asks = [[0], [2], [0], [2, 0]]

    async def scenario() -> list[np.ndarray]:
        blocker = await held_request(batcher, enc, BANK, [1])
        futs = [asyncio.ensure_future(batcher.embed([f"t{i}"], BANK, s)) for i, s in enumerate(asks)]
        await wait_until(lambda: batcher.waiting_texts() == 4)
        enc.release()
        await blocker
        outs = [o.vectors for o in await asyncio.gather(*futs)]
        await batcher.stop()
        return outs

    outs = run_scenario(scenario)
    assert len(enc.calls) == calls
    for i, (slots, vec) in enumerate(zip(asks, outs, strict=True)):
        np.testing.assert_array_equal(vec[0], want(enc, f"t{i}", slots))


def test_drain_finishes_admitted_requests_and_refuses_new_ones() -> None:
    enc = FakeEncoder()
    batcher = Batcher(enc)

    async def scenario() -> None:
        hold(enc)
        admitted = [asyncio.ensure_future(batcher.embed([f"t{i}"], BANK, [0])) for i in range(5)]
        await wait_until(enc.entered.is_set)
        drained = asyncio.ensure_future(batcher.drain(timeout=5))
        await wait_until(lambda: not batcher.accepting)
        with pytest.raises(NotReady) as err:
            await batcher.embed(["late"], BANK, [0])
        assert err.value.status_code == 503
        assert not drained.done()
        enc.release()
        assert await drained is True
        outs = await asyncio.gather(*admitted)
        assert [o.vectors[0, 0, 0] for o in outs] == [want(enc, f"t{i}", [0])[0, 0] for i in range(5)]
        await batcher.stop()

    run_scenario(scenario)


def test_stop_fails_what_could_not_drain_in_time() -> None:
    enc = FakeEncoder()
    batcher = Batcher(enc)

    async def scenario() -> None:
        blocker = await held_request(batcher, enc, BANK, [0])
        queued = asyncio.ensure_future(batcher.embed(["queued"], BANK, [0]))
        await wait_until(lambda: batcher.waiting_texts() == 1)
        stopping = asyncio.ensure_future(batcher.stop(timeout=0.1))  # the drain gives up: one is held
        await wait_until(lambda: batcher.stopping)  # the worker will take no further batch
        enc.release()  # the running batch ends after the drain gave up
        await stopping
        await blocker  # the batch in progress still completes
        with pytest.raises(NotReady):
            await queued

    run_scenario(scenario)


def test_prometheus_metrics_follow_the_batches() -> None:
    enc = FakeEncoder()
    batcher = Batcher(enc)
    registry = CollectorRegistry()
    register_batcher_metrics(batcher, registry)

    async def scenario() -> None:
        await asyncio.gather(*(batcher.embed([f"t{i} x"], BANK, [0, 1]) for i in range(8)))
        assert registry.get_sample_value("prefix_embed_queue_depth") == 0
        await batcher.stop()

    run_scenario(scenario)
    s = batcher.stats
    assert registry.get_sample_value("prefix_embed_forward_calls_total") == s.forward_calls
    assert registry.get_sample_value("prefix_embed_batch_rows_total") == s.forward_rows == 16
    assert registry.get_sample_value("prefix_embed_batch_tokens_sum") == s.forward_tokens
    assert registry.get_sample_value("prefix_embed_inference_seconds_count") == s.batches
    assert registry.get_sample_value("prefix_embed_padding_ratio_count") == s.batches
    assert registry.get_sample_value("prefix_embed_queue_seconds_count") == 8
