"""Wait for a condition with a deadline: the one way tests synchronise (never a bare sleep).

The implementation is :mod:`service.waiting` (the server launcher and the benchmarks wait through it
too), re-exported here for the tests: ``wait_until(cond, timeout, what, poll)`` and
``async_wait_until`` return ``cond()``'s first truthy value, or raise ``TimeoutError`` naming ``what``.
"""

from __future__ import annotations

from service.waiting import DEFAULT_TIMEOUT_S, POLL_S, async_wait_until, wait_until

__all__ = ["DEFAULT_TIMEOUT_S", "POLL_S", "async_wait_until", "wait_until"]
