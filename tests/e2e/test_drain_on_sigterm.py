"""A real ``python -m service serve`` process drains its in-flight requests on SIGTERM."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from service.bench.texts import sample_texts
from service.engine.backbone import Backbone
from tests.support.metrics import scrape
from tests.support.server_process import ServerProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

PREFIXES = ["p0", "p1", "p2", "p3"]


def test_sigterm_finishes_in_flight_requests_then_exits(
    tmp_path: Path,
    minilm: Backbone,
    minilm_path: Path,
    write_prefix: Callable[..., Path],
    server_process: Callable[..., ServerProcess],
) -> None:
    folder = tmp_path / "prefixes"
    folder.mkdir()
    for i, name in enumerate(PREFIXES):
        write_prefix(folder, name, minilm.spec, prefix_len=8, seed=i)
    # Large requests (32 texts x 4 prefixes each) so that they are still running at SIGTERM.
    bodies = [
        {"inputs": sample_texts(32, seed=i), "prefixes": ["base", *PREFIXES], "encoding": "base64"}
        for i in range(4)
    ]
    results: list[httpx.Response | Exception] = [RuntimeError("no answer")] * len(bodies)

    def post(i: int) -> None:
        try:
            results[i] = httpx.post(f"{base}/embed", json=bodies[i], timeout=120)
        except Exception as exc:  # recorded and asserted below
            results[i] = exc

    # `prefixes: null` = every enabled prefix and base (no models.json in the folder)
    args = ("--model", str(minilm_path), "--prefix-dir", str(folder), "--default-prefixes", "enabled")
    server = server_process(*args, env={"PREFIX_EMBED_WATCH": "false"}).wait_ready()
    base = server.url
    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    with server.client() as client:
        wait_until(
            lambda: scrape(client, "prefix_embed_queue_depth") >= len(bodies), what="all in the batcher"
        )
    server.terminate()
    for t in threads:
        t.join(120)
    code = server.wait_exit(60)
    log = server.log()
    # A clean drain is a normal exit (issue 15.13: stock uvicorn re-raised SIGTERM, status -15).
    assert code == 0, log[-3000:]
    for r in results:
        assert isinstance(r, httpx.Response), r
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert len(data) == 32
        assert all(sorted(item["embeddings"]) == ["base", *PREFIXES] for item in data)
    assert "Traceback" not in log, log[-3000:]
    with pytest.raises(httpx.ConnectError):  # gone: nothing listens on the port any more
        httpx.get(f"{base}/health", timeout=5)
