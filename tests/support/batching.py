"""The batcher's tests: an asyncio scenario run with a deadline (a bug fails the test instead of
hanging the suite), and a request that holds the worker so that others queue behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from service.batching import Batcher
from service.batching.request import EmbedOutput
from service.engine.bank import PrefixBank
from tests.support.fake_encoder import FakeEncoder
from tests.support.waiting import async_wait_until

T = TypeVar("T")


def run_scenario(coro_fn: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    """``asyncio.run(coro_fn())``, cancelled with ``TimeoutError`` after ``timeout`` seconds."""

    async def main() -> T:
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(main())


async def held_request(
    batcher: Batcher, encoder: FakeEncoder, bank: PrefixBank, slots: Sequence[int], text: str = "hold"
) -> asyncio.Future[EmbedOutput]:
    """A request that occupies the worker: ``encoder.hold()``, submit ``[text]`` under ``slots``, and
    return (its future) once the worker is inside ``encode()``; ``encoder.release()`` lets it finish.
    Whatever is submitted meanwhile queues behind it."""
    encoder.hold()
    running = asyncio.ensure_future(batcher.embed([text], bank, slots))
    await async_wait_until(encoder.entered.is_set, what="the worker inside encode()")
    return running
