"""Wait for a condition with a deadline: the one way tests synchronise (never a bare sleep).

``wait_until(cond, timeout, what, poll)`` and ``async_wait_until`` are :mod:`service.waiting`'s (the
server launcher and the benchmarks wait through them too), re-exported here for the tests: they
return ``cond()``'s first truthy value, or raise ``TimeoutError`` naming ``what``. ``in_thread`` runs a
call that might block with a deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from service.waiting import DEFAULT_TIMEOUT_S, POLL_S, async_wait_until, wait_until

__all__ = ["DEFAULT_TIMEOUT_S", "POLL_S", "async_wait_until", "in_thread", "wait_until"]

T = TypeVar("T")


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
