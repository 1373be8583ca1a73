"""Helpers shared by the HTTP tests: an app on a fake encoder, readiness, error-body checks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.engine.quantize import l2_normalize
from service.registry.formats import native_bytes
from service.runtime import Runtime
from tests.api_fake_encoder import FAKE_SPEC, FakeEncoder
from tests.conftest import random_kv

PREFIXES = ("alpha", "beta", "gamma")


def fake_prefix_bytes(seed: int = 0, prefix_len: int = 4) -> bytes:
    key, value = random_kv(FAKE_SPEC, prefix_len, seed)
    return native_bytes(key, value, {"backbone_fingerprint": FAKE_SPEC.fingerprint, "task": f"seed {seed}"})


def fill_folder(folder: Path, names: tuple[str, ...] = PREFIXES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / f"{name}.safetensors").write_bytes(fake_prefix_bytes(seed=i))
    return folder


def wait_ready(client: TestClient | httpx.Client, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get("/ready")
        if r.status_code == 200:
            return
        assert r.status_code == 503, r.text
        assert time.monotonic() < deadline, f"not ready after {timeout} s: {r.text}"
        time.sleep(0.02)


@contextmanager
def fake_app(folder: Path, **settings: Any) -> Iterator[tuple[TestClient, FakeEncoder, Runtime]]:
    """A running app (lifespan included) on a FakeEncoder serving ``folder``."""
    fake = FakeEncoder()
    opts: dict[str, Any] = {"prefix_dir": folder, "served_model_name": "fake-model", "max_client_batch": 8}
    opts.update(settings)
    app = create_app(Settings(**opts), encoder=fake)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        fake.calls.clear()  # the warm-up call
        yield client, fake, app.state.runtime


def assert_error(response: httpx.Response, status: int, code: str, *fragments: str) -> str:
    """The stable error body: exactly message, type and code; the message names what was wrong."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "code"}, body
    assert body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def expected_vectors(fake: FakeEncoder, runtime: Runtime, names: list[str], texts: list[str]) -> np.ndarray:
    """What the engine computes for ``texts`` under ``names``: [B, P, dim], L2-normalized."""
    from service.embedding import embed_sync

    bank = runtime.registry.snapshot.bank  # type: ignore[union-attr]
    vectors, _ = embed_sync(fake, bank, names, texts)
    return l2_normalize(vectors)
