"""A bounded loopback load generator: a fixed list of requests, C concurrent workers, one client.

Every request is sent exactly once; the run ends when the list is done or ``time_limit_s`` passes
(the rest are counted as not sent). Responses are checked for status only (the caller validates a
sample), so the client's own CPU cost stays small on a machine it shares with the server.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Call:
    """One request: JSON ``body`` to ``path``, worth ``vectors`` (texts x prefixes) when it succeeds."""

    path: str
    body: dict[str, Any]
    vectors: int


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    sent: int
    ok: int
    vectors: int
    latencies: list[float] = field(default_factory=list, repr=False)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def vectors_per_s(self) -> float:
        return self.vectors / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1]

    def summary(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "requests": self.sent,
            "ok": self.ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "seconds": round(self.seconds, 3),
            "vectors_per_s": round(self.vectors_per_s, 1),
            "requests_per_s": round(self.ok / self.seconds, 2) if self.seconds > 0 else 0.0,
            "p50_ms": round(self.percentile(50) * 1000, 1),
            "p99_ms": round(self.percentile(99) * 1000, 1),
        }


async def run_load(
    base_url: str,
    calls: Sequence[Call],
    concurrency: int,
    *,
    time_limit_s: float = 300.0,
    request_timeout_s: float = 120.0,
) -> LoadResult:
    """Send ``calls`` with ``concurrency`` workers over one pooled client; measure wall time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    result = LoadResult(concurrency=concurrency, seconds=0.0, sent=0, ok=0, vectors=0)
    queue = list(reversed(calls))
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=request_timeout_s) as client:
        end = time.monotonic() + time_limit_s

        async def worker() -> None:
            while queue and time.monotonic() < end:
                call = queue.pop()
                result.sent += 1
                t0 = time.perf_counter()
                try:
                    resp = await client.post(call.path, json=call.body)
                    status = resp.status_code
                except httpx.HTTPError:
                    status = 0
                result.latencies.append(time.perf_counter() - t0)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == 200:
                    result.ok += 1
                    result.vectors += call.vectors

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result


async def fetch_json(base_url: str, call: Call) -> Any:
    """One request, the parsed body: used to validate a sample of what the load run sends."""
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        resp = await client.post(call.path, json=call.body)
        resp.raise_for_status()
        return resp.json()
