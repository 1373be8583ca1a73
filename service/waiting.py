"""Wait for a condition with a deadline: the one polling loop of the tree (the launcher in
:mod:`service.procs`, the benchmarks and the tests all wait through it; tests never sleep to sync).

The poll interval only bounds how soon a met condition is noticed; the deadline only bounds how long
a caller hangs on a bug. Neither is a measurement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
POLL_S = 0.005


def wait_until(
    cond: Callable[[], T], timeout: float = DEFAULT_TIMEOUT_S, what: str = "condition", poll: float = POLL_S
) -> T:
    """Poll ``cond()`` until it is truthy and return its value; :class:`TimeoutError` naming ``what``
    after ``timeout`` seconds. An exception raised by ``cond`` ends the wait at once."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached after {timeout:g} s")
        time.sleep(poll)
    return value


async def async_wait_until(
    cond: Callable[[], T], timeout: float = DEFAULT_TIMEOUT_S, what: str = "condition", poll: float = POLL_S
) -> T:
    """:func:`wait_until` for a coroutine: yields to the event loop between polls."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached after {timeout:g} s")
        await asyncio.sleep(poll)
    return value
