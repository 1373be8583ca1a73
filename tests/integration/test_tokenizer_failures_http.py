"""Over HTTP with the real tokenizer (tiny BERT): a lone surrogate escaped in the JSON is refused for
its own request while the requests queued with it are served with the engine's own vectors; an
input over the character cap is refused with 413 at once; /info names the backend and why."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.backend import build_torch_encoder
from service.config import Settings
from service.engine.backbone import Backbone
from service.engine.direct import embed_sync
from service.registry.folder import scan_folder
from service.wire.encodings import l2_normalize
from tests.support.http import assert_error, wait_ready
from tests.support.waiting import wait_until

GOOD = [f"good request number {i} with a few words" for i in range(12)]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tiny_bert_path: Path, tiny_bert: Backbone
) -> Iterator[tuple[TestClient, Settings]]:
    from service.registry.writer import native_bytes
    from tests.support.prefixes import random_kv

    folder = tmp_path_factory.mktemp("prefixes")
    key, value = random_kv(tiny_bert.spec, 3, seed=1)
    meta = {"backbone_fingerprint": tiny_bert.spec.fingerprint}
    (folder / "p1.safetensors").write_bytes(native_bytes(key, value, meta))
    settings = Settings(model=tiny_bert_path, prefix_dir=folder, device="cpu", dtype="float32", watch=False)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client, settings


def reference(settings: Settings, tiny_bert: Backbone, texts: Sequence[str]) -> np.ndarray:
    from service.engine.bank import PrefixBank

    encoder = build_torch_encoder(settings, backbone=tiny_bert)
    loaded, _ = scan_folder(settings.prefix_dir, encoder.spec, settings.prefix_limits())
    vectors, _ = embed_sync(encoder, PrefixBank.build(loaded), ["p1"], texts)
    return l2_normalize(vectors)[:, 0]


def test_lone_surrogate_is_a_4xx_for_its_request_only(
    served: tuple[TestClient, Settings], tiny_bert: Backbone
) -> None:
    client, settings = served
    encoder = client.app.state.runtime.encoder  # type: ignore[attr-defined]
    batcher = client.app.state.runtime.batcher  # type: ignore[attr-defined]
    real = encoder.tokenize
    release, holding = threading.Event(), threading.Event()

    def gated(texts: Sequence[str], **kw: Any) -> Any:  # hold the first call: the rest pile up
        if not holding.is_set():
            holding.set()
            release.wait(10)
        return real(texts, **kw)

    bad_body = '{"inputs": ["fine", "bad \\ud800 input"], "prefixes": ["p1"]}'
    assert "\ud800" in json.loads(bad_body)["inputs"][1]
    encoder.tokenize = gated
    try:
        with ThreadPoolExecutor(16) as pool:
            first = pool.submit(client.post, "/embed", json={"inputs": "hold", "prefixes": ["p1"]})
            assert holding.wait(10)
            goods = [pool.submit(client.post, "/embed", json={"inputs": t, "prefixes": ["p1"]}) for t in GOOD]
            bad = pool.submit(
                client.post, "/embed", content=bad_body, headers={"content-type": "application/json"}
            )
            # the bad one is refused by validation now
            wait_until(lambda: batcher.queue_depth >= len(GOOD) + 1, 10, "the good requests queued")
            release.set()
            assert first.result().status_code == 200
            # refused before the batcher (request validation, service/api/schemas.py); a text that
            # still reaches the tokenizer is isolated there (tests/unit/test_tokenizer_stage.py)
            assert bad.result().status_code in (400, 422), bad.result().text
            assert "lone surrogate" in bad.result().json()["error"]["message"]
            got = [r.result() for r in goods]
    finally:
        encoder.tokenize = real
        release.set()
    assert [r.status_code for r in got] == [200] * len(GOOD)
    vectors = np.array([r.json()["data"][0]["embeddings"]["p1"] for r in got])
    np.testing.assert_allclose(vectors, reference(settings, tiny_bert, GOOD), atol=1e-5)


def test_input_over_the_character_cap_is_413_and_a_small_one_is_served(
    served: tuple[TestClient, Settings], tiny_bert: Backbone
) -> None:
    client, settings = served
    cap = client.get("/info").json()["limits"]["max_input_chars"]
    assert cap == 32 * client.get("/info").json()["limits"]["max_input_tokens"]  # the default
    huge = "lorem ipsum " * (cap // 4)
    with ThreadPoolExecutor(2) as pool:
        big = pool.submit(client.post, "/embed", json={"inputs": huge, "truncate": False})
        small = pool.submit(client.post, "/embed", json={"inputs": GOOD[0], "prefixes": ["p1"]})
        assert_error(big.result(), 413, "input_too_long", "input 0", f"limit of {cap}", "max_input_chars")
        assert small.result().status_code == 200
    # with truncation, the huge input is cut and served like its first max_input_tokens tokens
    cut = client.post("/embed", json={"inputs": huge, "prefixes": ["p1"]})
    assert cut.status_code == 200, cut.text
    np.testing.assert_allclose(
        cut.json()["data"][0]["embeddings"]["p1"], reference(settings, tiny_bert, [huge[:4000]])[0], atol=1e-5
    )


def test_info_says_which_backend_serves_and_why(served: tuple[TestClient, Settings]) -> None:
    client, settings = served
    info = client.get("/info").json()
    assert info["backend"] == settings.backend == "torch"  # tests pin torch (tests/conftest.py)
    assert info["backend_reason"] == "backend torch was set explicitly"
