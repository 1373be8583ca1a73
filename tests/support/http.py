"""Helpers shared by the HTTP tests: an app on the fake encoder, readiness, error-body checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.runtime import Runtime
from service.wire.encodings import l2_normalize
from tests.support.fake_encoder import FAKE_SPEC, FakeEncoder
from tests.support.prefixes import prefix_bytes, random_kv
from tests.support.waiting import wait_until

PREFIXES = ("alpha", "beta", "gamma")
# What `prefixes: null` serves with every file prefix enabled under `default_prefixes="enabled"` (what
# fake_app sets unless told otherwise): the built-in base first (include_base).
SERVED = ("base", *PREFIXES)
LONG = " ".join(["word"] * 40)  # 42 tokens with [CLS]/[SEP]


# Bad requests for a server with max_client_batch=8, max_input_tokens=32, prefixes alpha, beta and
# gamma (disabled): (route, json body, status, code, fragments of the message).
BAD_INPUTS: list[tuple[str, Any, int, str, tuple[str, ...]]] = [
    ("/embed", {"inputs": ["a"] * 9}, 413, "too_many_inputs", ("9 items", "limit of 8", "max_client_batch")),
    ("/embed", {"inputs": LONG, "truncate": False}, 413, "input_too_long", ("input 0", "limit of 32 tokens")),
    ("/embed", {"inputs": []}, 400, "invalid_input", ("empty list",)),
    ("/embed", {"inputs": ""}, 400, "invalid_input", ("inputs is an empty string",)),
    ("/embed", {"inputs": ["ok", ""]}, 400, "invalid_input", ("item(s) 1 are empty strings",)),
    ("/embed", {"inputs": ["ok", 3]}, 422, "validation_error", ("inputs", "item 1 is a number")),
    ("/embed", {"inputs": [[101, 102]]}, 422, "validation_error", ("item 0 is a list", "token id")),
    ("/embed", {"inputs": {"text": "x"}}, 422, "validation_error", ("string or a list of strings", "object")),
    ("/embed", {"inputs": None}, 422, "validation_error", ("inputs", "null")),
    ("/embed", {}, 422, "validation_error", ("inputs: required",)),
    ("/embed", {"inputs": "x", "prefix": ["a"]}, 422, "validation_error", ("unknown field 'prefix'",)),
    (
        "/embed",
        {"inputs": "x", "prefixes": ["nope"]},
        404,
        "prefix_not_found",
        ("'nope'", "alpha, beta, gamma"),
    ),
    ("/embed", {"inputs": "x", "prefixes": ["gamma"]}, 409, "prefix_disabled", ("'gamma'", "disabled")),
    ("/embed", {"inputs": "x", "prefixes": []}, 400, "invalid_input", ("prefixes is an empty list",)),
    (
        "/embed",
        {"inputs": "x", "prefixes": ["alpha", "alpha"]},
        400,
        "invalid_input",
        ("'alpha' more than once",),
    ),
    ("/embed", {"inputs": "x", "prefixes": "alpha"}, 422, "validation_error", ("prefixes",)),
    (
        "/embed",
        {"inputs": "x", "encoding": "hex"},
        422,
        "validation_error",
        ("encoding", "'binary'", "'hex'"),
    ),
    ("/embed", {"inputs": "x", "combine": "sum"}, 422, "validation_error", ("combine", "'concat'", "'sum'")),
    ("/embed", {"inputs": "x", "normalize": "yes"}, 422, "validation_error", ("normalize",)),
    ("/embed", ["x"], 422, "validation_error", ("JSON object",)),
    ("/v1/embeddings", {"input": [], "model": "alpha"}, 400, "invalid_input", ("input is an empty list",)),
    ("/v1/embeddings", {"input": [[1, 2]], "model": "alpha"}, 422, "validation_error", ("token id",)),
    ("/v1/embeddings", {"input": "x"}, 422, "validation_error", ("model: required",)),
    (
        "/v1/embeddings",
        {"input": "x", "model": "gpt"},
        404,
        "prefix_not_found",
        ("'gpt'", "'fake-model'", "alpha"),
    ),
    ("/v1/embeddings", {"input": "x", "model": "gamma"}, 409, "prefix_disabled", ("'gamma'",)),
    (
        "/v1/embeddings",
        {"input": "x", "model": "alpha", "encoding_format": "binary"},
        422,
        "validation_error",
        ("encoding_format", "'base64'"),
    ),
    ("/v1/embeddings", {"input": "x", "model": "alpha", "dimensions": 4}, 400, "invalid_input", ("has 8",)),
    ("/v1/embeddings", {"input": ["a"] * 9, "model": "alpha"}, 413, "too_many_inputs", ("limit of 8",)),
]


def fake_prefix_bytes(seed: int = 0, prefix_len: int = 4) -> bytes:
    """A native prefix file for the fake encoder's spec, metadata ``task = "seed <seed>"``."""
    return prefix_bytes(FAKE_SPEC, prefix_len, seed, task=f"seed {seed}")


def unverified_prefix_bytes(seed: int = 0, scale: float = 0.5, **meta: str) -> bytes:
    """A native file for the fake spec as a third party writes it: valid, but no content_sha256."""
    from safetensors.torch import save as st_save

    key, value = random_kv(FAKE_SPEC, 4, seed, scale)
    return st_save(
        {"key": key, "value": value}, metadata={"backbone_fingerprint": FAKE_SPEC.fingerprint, **meta}
    )


def fill_folder(folder: Path, names: tuple[str, ...] = PREFIXES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / f"{name}.safetensors").write_bytes(fake_prefix_bytes(seed=i))
    return folder


def wait_ready(client: TestClient | httpx.Client, timeout: float = 60.0) -> None:
    """Poll /ready until 200; anything but 200 or 503 on the way fails at once."""

    def ready() -> bool:
        r = client.get("/ready")
        assert r.status_code in (200, 503), r.text
        return r.status_code == 200

    wait_until(ready, timeout, "/ready = 200")


@contextmanager
def fake_app(folder: Path, **settings: Any) -> Iterator[tuple[TestClient, FakeEncoder, Runtime]]:
    """A running app (lifespan included) on a FakeEncoder serving ``folder``. ``prefixes: null`` means
    every enabled prefix (``default_prefixes="enabled"``) unless ``settings`` say otherwise."""
    fake = FakeEncoder()
    opts: dict[str, Any] = {
        "prefix_dir": folder,
        "served_model_name": "fake-model",
        "max_client_batch": 8,
        "default_prefixes": "enabled",
    }
    opts.update(settings)
    app = create_app(Settings(**opts), encoder=fake)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        fake.calls.clear()  # the warm-up call
        fake.forward_calls = 0
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
    from service.engine.direct import embed_sync

    bank = runtime.registry.snapshot.bank  # type: ignore[union-attr]
    vectors, _ = embed_sync(fake, bank, names, texts)
    return l2_normalize(vectors)
