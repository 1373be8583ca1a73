"""Requests still queued when the drain runs out of time are failed (503) and counted as `shutdown`."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from service.batching import Batcher
from service.batching.prometheus import register_batcher_metrics
from service.errors import NotReady
from tests.support.batching import held_request, run_scenario
from tests.support.fake_encoder import FakeEncoder, fake_bank
from tests.support.waiting import async_wait_until as wait_until

BANK = fake_bank(["alpha", "beta"])


def test_requests_left_in_the_queue_at_shutdown_are_dropped_as_shutdown() -> None:
    enc = FakeEncoder()
    batcher = Batcher(enc)
    registry = CollectorRegistry()
    register_batcher_metrics(batcher, registry)

    async def scenario() -> None:
        await batcher.start()
        running = await held_request(batcher, enc, BANK, [0], "hold the worker")
        queued = [asyncio.ensure_future(batcher.embed([f"queued {i}"], BANK, [1])) for i in range(2)]
        await wait_until(lambda: batcher.queue_depth == 3)
        stopping = asyncio.ensure_future(batcher.stop(timeout=0))  # no time to drain
        await wait_until(lambda: batcher.stopping)  # told to stop after the current batch
        enc.release()  # the batch in progress finishes; the queued ones never run
        await stopping
        assert (await running).vectors.shape[0] == 1
        for q in queued:
            with pytest.raises(NotReady, match="shutting down"):
                await q

    run_scenario(scenario, 90)
    assert batcher.stats.dropped == {"shutdown": 2}
    value = registry.get_sample_value("prefix_embed_requests_dropped_total", {"reason": "shutdown"})
    assert value == 2
