"""Running an asyncio test scenario (the batcher's tests): the coroutine on a fresh event loop, with
a deadline so that a bug fails the test instead of hanging the suite."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def run_scenario(coro_fn: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    """``asyncio.run(coro_fn())``, cancelled with ``TimeoutError`` after ``timeout`` seconds."""

    async def main() -> T:
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(main())
