"""Batching and overload at the HTTP level (fake encoder): coalescing read from /metrics, 429 with
Retry-After, 504 past the deadline, and a disconnected client's work dropped from the queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi.testclient import TestClient

from tests.support.http import PREFIXES, SERVED, assert_error, expected_vectors, fake_app, fill_folder
from tests.support.metrics import scrape
from tests.support.waiting import async_wait_until as until
from tests.support.waiting import wait_until

T = TypeVar("T")


def in_app_loop(client: TestClient, fn: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    """Run ``fn(async client)`` on the app's own event loop, so requests really run concurrently."""

    async def main() -> T:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            return await fn(ac)

    assert client.portal is not None
    return client.portal.call(main)


def test_32_concurrent_requests_take_fewer_than_32_forward_calls(tmp_path: Path) -> None:
    texts = [f"request number {i} " + "word " * (i % 5) for i in range(32)]
    with fake_app(fill_folder(tmp_path / "p")) as (client, fake, runtime):
        before = scrape(client, "prefix_embed_forward_calls_total")
        batcher = runtime.batcher
        assert batcher is not None

        async def burst(ac: httpx.AsyncClient) -> list[httpx.Response]:
            fake.hold()  # while the first batch runs, all the others queue up behind it
            posts = [asyncio.ensure_future(ac.post("/embed", json={"inputs": t})) for t in texts]
            await until(fake.entered.is_set)
            await until(lambda: batcher.waiting_texts() == 32 - fake.calls[0].size)
            fake.release()
            return list(await asyncio.gather(*posts))

        responses = in_app_loop(client, burst)
        calls = scrape(client, "prefix_embed_forward_calls_total") - before
        rows = scrape(client, "prefix_embed_batch_rows_total")
        encoded = list(fake.calls)  # before expected_vectors() adds its own calls
        for text, r in zip(texts, responses, strict=True):
            assert r.status_code == 200, r.text
            want = expected_vectors(fake, runtime, list(PREFIXES), [text])[0]
            got = [r.json()["data"][0]["embeddings"][n] for n in PREFIXES]
            assert abs(want - got).max() < 1e-6
    assert calls <= 2 < 32  # the first batch (one or more requests), then all the others together
    assert calls == len(encoded)
    assert sum(c.size for c in encoded) == 32
    assert rows == 32 * len(SERVED)


def test_a_request_with_every_prefix_costs_one_forward_call(tmp_path: Path) -> None:
    with fake_app(fill_folder(tmp_path / "p")) as (client, fake, _):
        before = scrape(client, "prefix_embed_forward_calls_total")
        r = client.post("/embed", json={"inputs": ["one text", "and another", "third"]})
        assert r.status_code == 200, r.text
        assert scrape(client, "prefix_embed_forward_calls_total") - before == 1
        assert [(c.size, c.names) for c in fake.calls] == [(3, SERVED)]


def test_a_full_queue_is_429_with_retry_after(tmp_path: Path) -> None:
    with fake_app(fill_folder(tmp_path / "p"), max_queue_requests=2) as (client, fake, runtime):
        fake.hold()
        batcher = runtime.batcher
        assert batcher is not None

        async def overload(ac: httpx.AsyncClient) -> tuple[httpx.Response, list[httpx.Response]]:
            admitted = [asyncio.ensure_future(ac.post("/embed", json={"inputs": f"t{i}"})) for i in range(2)]
            await until(lambda: batcher.queue_depth == 2)
            refused = await ac.post("/embed", json={"inputs": "one too many"})
            fake.release()
            return refused, list(await asyncio.gather(*admitted))

        refused, admitted = in_app_loop(client, overload)
        assert_error(refused, 429, "queue_full", "queue is full")
        assert int(refused.headers["Retry-After"]) >= 1
        assert [r.status_code for r in admitted] == [200, 200]
        assert scrape(client, "prefix_embed_requests_dropped_total", reason="queue_full") == 1


def test_a_request_past_its_deadline_is_504(tmp_path: Path) -> None:
    with fake_app(fill_folder(tmp_path / "p"), request_timeout_s=0.2) as (client, fake, _):
        fake.hold()  # the request stays in the encoder past its deadline
        r = client.post("/embed", json={"inputs": "slow"})
        assert_error(r, 504, "deadline_exceeded", "0.2 s")
        fake.release()
        wait_until(lambda: fake.forward_calls == 1, what="the abandoned batch finished")
        assert client.post("/embed", json={"inputs": "fast"}).status_code == 200


def test_a_disconnected_client_is_dropped_from_the_queue(tmp_path: Path) -> None:
    with fake_app(fill_folder(tmp_path / "p")) as (client, fake, runtime):
        fake.hold()
        batcher = runtime.batcher
        assert batcher is not None
        sent: list[dict[str, Any]] = []

        async def leave_early(ac: httpx.AsyncClient) -> httpx.Response:
            holder = asyncio.ensure_future(ac.post("/embed", json={"inputs": "holds the worker"}))
            await until(fake.entered.is_set)
            gone = asyncio.Event()
            body = json.dumps({"inputs": "nobody will read this"}).encode()
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop()
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/embed",
                "raw_path": b"/embed",
                "query_string": b"",
                "root_path": "",
                "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
                "client": ("127.0.0.1", 5000),
                "server": ("test", 80),
            }
            leaving = asyncio.ensure_future(client.app(scope, receive, send))
            await until(lambda: batcher.queue_depth == 2)
            gone.set()  # the client hangs up while its request waits behind the holder
            await leaving
            fake.release()
            return await holder

        holder = in_app_loop(client, leave_early)
        assert holder.status_code == 200
        assert client.post("/embed", json={"inputs": "still serving"}).status_code == 200
        # the departed request never reached the encoder, before or after the one queued behind it
        assert [c.texts for c in fake.calls] == [("holds the worker",), ("still serving",)]
        assert sent[0]["status"] == 499
        assert batcher.stats.dropped == {"cancelled": 1}
        assert scrape(client, "prefix_embed_requests_dropped_total", reason="cancelled") == 1
