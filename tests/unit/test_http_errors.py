"""Every bad input gets its 4xx with a message naming what was wrong (never a 5xx); auth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.http import BAD_INPUTS, assert_error, fake_app, fake_prefix_bytes, fill_folder


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = fill_folder(tmp_path_factory.mktemp("prefixes"))
    (folder / "state.json").write_text('{"version": 1, "disabled": ["gamma"]}')
    with fake_app(folder, max_request_bytes=2048) as (c, _, _):
        yield c


@pytest.mark.parametrize(("route", "body", "status", "code", "fragments"), BAD_INPUTS)
def test_bad_input_is_a_clear_4xx(
    client: TestClient, route: str, body: Any, status: int, code: str, fragments: tuple[str, ...]
) -> None:
    assert_error(client.post(route, json=body), status, code, *fragments)


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post("/embed", content=b'{"inputs": ["a",', headers={"content-type": "application/json"})
    assert_error(r, 400, "malformed_json", "malformed JSON at position")


def test_a_body_over_the_size_limit_is_413(client: TestClient) -> None:
    big = {"inputs": ["x" * 3000]}
    assert_error(
        client.post("/embed", json=big), 413, "payload_too_large", "limit of 2048 bytes", "max_request_bytes"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield b'{"inputs": ["'
        for _ in range(4):
            yield b"y" * 1000
        yield b'"]}'

    r = client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large", "limit of 2048 bytes")


def test_bad_patches_and_uploads_are_4xx(client: TestClient) -> None:
    assert_error(client.patch("/prefixes", json=["alpha"]), 400, "invalid_input", "JSON object")
    assert_error(
        client.patch("/prefixes", json={"alpha": {"enabled": "off"}}), 400, "invalid_input", "'enabled'"
    )
    assert_error(
        client.patch("/prefixes", json={"alpha": {"name": "x"}}), 400, "invalid_input", "only 'enabled'"
    )
    assert_error(client.put("/prefixes/broken", content=b""), 422, "invalid_prefix_file", "empty file")
    torn = fake_prefix_bytes()[:-10]
    assert_error(
        client.put("/prefixes/broken", content=torn), 422, "invalid_prefix_file", "truncated or corrupt"
    )


def test_unknown_routes_and_methods_use_the_error_format(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found", "GET /nope")
    assert_error(client.get("/embed"), 405, "method_not_allowed", "GET", "/embed")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = fill_folder(tmp_path_factory.mktemp("secured"))
    with fake_app(folder, api_keys=["key-one", "key-two"], admin_key="admin-key") as (c, _, _):
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_embedding_routes_need_an_api_key(secured: TestClient) -> None:
    r = secured.post("/embed", json={"inputs": "x"})
    assert_error(r, 401, "invalid_api_key", "missing API key")
    assert r.headers["www-authenticate"] == "Bearer"
    assert_error(
        secured.post("/embed", json={"inputs": "x"}, headers=bearer("key-three")), 401, "invalid_api_key"
    )
    assert_error(secured.get("/prefixes"), 401, "invalid_api_key")
    for key in ("key-one", "key-two", "admin-key"):
        assert secured.post("/embed", json={"inputs": "x"}, headers=bearer(key)).status_code == 200
        assert (
            secured.post(
                "/v1/embeddings", json={"input": "x", "model": "alpha"}, headers=bearer(key)
            ).status_code
            == 200
        )


def test_prefix_changes_need_the_admin_key(secured: TestClient) -> None:
    patch = {"beta": {"enabled": True}}
    assert_error(secured.patch("/prefixes", json=patch), 401, "invalid_api_key", "admin key")
    assert_error(secured.patch("/prefixes", json=patch, headers=bearer("key-one")), 403, "admin_key_required")
    assert_error(
        secured.put("/prefixes/x", content=fake_prefix_bytes(), headers=bearer("key-one")),
        403,
        "admin_key_required",
    )
    assert secured.patch("/prefixes", json=patch, headers=bearer("admin-key")).status_code == 200
    assert (
        secured.patch("/prefixes/beta", json={"enabled": True}, headers=bearer("admin-key")).status_code
        == 200
    )


def test_health_ready_and_metrics_stay_open(secured: TestClient) -> None:
    for route in ("/health", "/ready", "/metrics", "/info"):
        assert secured.get(route).status_code == 200, route


def test_without_an_admin_key_prefix_changes_need_an_api_key(tmp_path: Path) -> None:
    with fake_app(fill_folder(tmp_path), api_keys="only-key") as (c, _, _):
        assert_error(c.patch("/prefixes/alpha", json={"enabled": False}), 401, "invalid_api_key")
        assert (
            c.patch("/prefixes/alpha", json={"enabled": False}, headers=bearer("only-key")).status_code == 200
        )
