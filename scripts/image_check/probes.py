"""HTTP probes of a running service (container or local): readiness, vectors, prefixes, requests in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from scripts.image_check.podman import check
from tests.support.metrics import metric_value
from tests.support.waiting import wait_until

# Short and long, plain and odd: the container and the local service must agree on all of them.
TEXTS = [
    "I loved this film",
    "Stocks fell sharply after the earnings report",
    "WINNER!! Claim your free prize now, reply STOP to end",
    "How many moons does Jupiter have?",
    "naïve café — ünïcödé, emoji 🙂 and numbers 3.14159",
    "a fairly long text about many things " * 12,
]
TOLERANCE = 1e-5


def wait_ready(url: str, timeout: float, alive: Callable[[], None]) -> float:
    """Seconds until ``url/ready`` answers 200; ``alive()`` raises if the server died meanwhile."""
    start = time.monotonic()

    def ready() -> bool:
        alive()
        try:
            return httpx.get(f"{url}/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, timeout, f"{url}/ready", poll=0.2)
    return time.monotonic() - start


def embed(url: str, prefixes: list[str] | None = None, texts: list[str] = TEXTS) -> dict[str, Any]:
    """``POST /embed`` (float vectors, one per prefix); the body, after checking the status."""
    r = httpx.post(f"{url}/embed", json={"inputs": texts, "prefixes": prefixes}, timeout=120)
    check(r.status_code == 200, f"POST {url}/embed: {r.status_code} {r.text[:500]}")
    return r.json()


def vectors(body: dict[str, Any]) -> dict[str, np.ndarray]:
    """``{prefix: [texts, dim]}`` of an /embed body."""
    names = [p["name"] for p in body["prefixes"]]
    return {n: np.array([item["embeddings"][n] for item in body["data"]], dtype=np.float64) for n in names}


def same_vectors(got: dict[str, Any], want: dict[str, Any], what: str) -> float:
    """Check that two /embed bodies name the same prefixes, digests and dims, and that every vector
    agrees within :data:`TOLERANCE`; returns the largest difference."""
    check(
        got["prefixes"] == want["prefixes"],
        f"{what}: prefixes differ:\n  {got['prefixes']}\n  {want['prefixes']}",
    )
    a, b = vectors(got), vectors(want)
    diff = max(float(np.abs(a[n] - b[n]).max()) for n in a)
    check(diff <= TOLERANCE, f"{what}: vectors differ by {diff:.3g} (> {TOLERANCE})")
    return diff


def prefix_table(url: str) -> dict[str, dict[str, Any]]:
    """``GET /prefixes`` as ``{name: entry}``."""
    r = httpx.get(f"{url}/prefixes", timeout=30)
    check(r.status_code == 200, f"GET {url}/prefixes: {r.status_code} {r.text[:500]}")
    return {p["name"]: p for p in r.json()["prefixes"]}


def patch_prefix(url: str, name: str, enabled: bool, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.patch(f"{url}/prefixes/{name}", json={"enabled": enabled}, headers=headers, timeout=30)


@dataclass
class InFlight:
    """``clients`` concurrent /embed requests of ``texts`` long texts each, started together."""

    url: str
    # Small enough to finish inside the queue deadline (request_timeout_s, 30 s) on 2 busy CPUs: a
    # 504 after SIGTERM would be an answer, but not the vectors the client asked for.
    clients: int = 4
    texts: int = 16
    results: list[tuple[int, int, float]] = field(default_factory=list)  # status, items, finished at
    errors: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def _post(self, i: int) -> None:
        texts = [
            f"request {i} text {j}: " + "a fairly long text about many things " * 8 for j in range(self.texts)
        ]
        try:
            r = httpx.post(f"{self.url}/embed", json={"inputs": texts}, timeout=120)
            self.results.append((r.status_code, len(r.json().get("data", [])), time.monotonic()))
        except (httpx.HTTPError, ValueError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def start(self) -> None:
        """Start the clients and return once the service has admitted at least one of them."""
        self.threads = [threading.Thread(target=self._post, args=(i,)) for i in range(self.clients)]
        for t in self.threads:
            t.start()

        def admitted() -> bool:
            check(not self.errors, f"a request failed before SIGTERM: {self.errors}")
            text = httpx.get(f"{self.url}/metrics", timeout=10).text
            return metric_value(text, "prefix_embed_queue_depth") >= 1

        wait_until(admitted, 60, "a request in flight", poll=0.01)

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout)
        check(not any(t.is_alive() for t in self.threads), f"a request got no answer within {timeout} s")
