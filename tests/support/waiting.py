"""Wait for a condition with a deadline: the one way tests synchronise (never a bare sleep).

The poll interval only bounds how soon a met condition is noticed; the deadline only bounds how long
a test hangs on a bug. Neither is asserted on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
POLL_S = 0.005


def wait_until(
    cond: Callable[[], T], timeout: float = DEFAULT_TIMEOUT_S, what: str = "condition", poll: float = POLL_S
) -> T:
    """Poll ``cond()`` until it is truthy; return its value. AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, f"{what} not reached after {timeout:g} s"
        time.sleep(poll)
    return value


async def async_wait_until(
    cond: Callable[[], T], timeout: float = DEFAULT_TIMEOUT_S, what: str = "condition", poll: float = POLL_S
) -> T:
    """:func:`wait_until` for a coroutine: yields to the event loop between polls."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, f"{what} not reached after {timeout:g} s"
        await asyncio.sleep(poll)
    return value


def in_thread(fn: Callable[[], T], timeout: float = DEFAULT_TIMEOUT_S, what: str = "call") -> T:
    """``fn()`` in a daemon thread: its value, or an AssertionError naming ``what`` when it has not
    returned within ``timeout`` (a call that blocks fails the test instead of hanging the suite)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{what} blocked for over {timeout:g} s"
    if "error" in out:
        raise out["error"]
    return out["value"]
