"""A table of hostile and careless requests (issue 15): each gets its 4xx naming the problem,
never a 5xx, and never fails a well-formed request running beside it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.schemas import MAX_REQUEST_PREFIXES, check_prefix_list
from service.errors import InvalidInput
from tests.support.http import assert_error, expected_vectors, fake_app, fill_folder

JSON = {"content-type": "application/json"}


def raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


# (name, method, route, body: JSON value or raw bytes, headers, status, code, fragments of the message)
# against a server with max_client_batch=8, prefixes alpha, beta, gamma (gamma disabled), and a
# request body limit of 1 MiB.
TABLE: list[tuple[str, str, str, Any, dict[str, str], int, str, tuple[str, ...]]] = [
    # issue 15
    (
        "40,000 prefix names",
        "POST",
        "/embed",
        {"inputs": "x", "prefixes": [f"p{i}" for i in range(40_000)]},
        JSON,
        422,
        "validation_error",
        ("40000 names", "MAX_REQUEST_PREFIXES"),
    ),
    (
        "lone surrogate",
        "POST",
        "/embed",
        b'{"inputs": ["fine", "\\ud800 bad"]}',
        JSON,
        422,
        "validation_error",
        ("item 1", "lone surrogate", "not valid Unicode"),
    ),
    (
        "lone surrogate, openai",
        "POST",
        "/v1/embeddings",
        b'{"model": "alpha", "input": "\\udfff"}',
        JSON,
        422,
        "validation_error",
        ("lone surrogate",),
    ),
    (
        "duplicate prefixes",
        "POST",
        "/embed",
        {"inputs": "x", "prefixes": ["beta", "alpha", "beta"]},
        JSON,
        400,
        "invalid_input",
        ("'beta' more than once",),
    ),
    # wrong types
    ("inputs a number", "POST", "/embed", {"inputs": 5}, JSON, 422, "validation_error", ("a number",)),
    ("token ids", "POST", "/embed", {"inputs": [[101, 102]]}, JSON, 422, "validation_error", ("token id",)),
    (
        "prefixes a string",
        "POST",
        "/embed",
        {"inputs": "x", "prefixes": "alpha"},
        JSON,
        422,
        "validation_error",
        ("prefixes",),
    ),
    (
        "normalize a string",
        "POST",
        "/embed",
        {"inputs": "x", "normalize": "yes"},
        JSON,
        422,
        "validation_error",
        ("normalize",),
    ),
    (
        "model a number",
        "POST",
        "/v1/embeddings",
        {"input": "x", "model": 5},
        JSON,
        422,
        "validation_error",
        ("model",),
    ),
    (
        "dimensions NaN",
        "POST",
        "/v1/embeddings",
        b'{"input": "x", "model": "alpha", "dimensions": NaN}',
        JSON,
        422,
        "validation_error",
        ("dimensions",),
    ),
    ("body an array", "POST", "/embed", ["x"], JSON, 422, "validation_error", ("JSON object",)),
    (
        "unknown field",
        "POST",
        "/embed",
        {"inputs": "x", "prefix": ["a"]},
        JSON,
        422,
        "validation_error",
        ("unknown field 'prefix'",),
    ),
    # empty
    ("empty list", "POST", "/embed", {"inputs": []}, JSON, 400, "invalid_input", ("empty list",)),
    ("empty string", "POST", "/embed", {"inputs": ""}, JSON, 400, "invalid_input", ("empty string",)),
    ("empty body", "POST", "/embed", b"", JSON, 422, "validation_error", ("request body is empty",)),
    (
        "empty prefixes",
        "POST",
        "/embed",
        {"inputs": "x", "prefixes": []},
        JSON,
        400,
        "invalid_input",
        ("prefixes is an empty list",),
    ),
    # sizes
    (
        "huge batch",
        "POST",
        "/embed",
        {"inputs": ["a"] * 5000},
        JSON,
        413,
        "too_many_inputs",
        ("5000 items", "max_client_batch"),
    ),
    (
        "huge batch, openai",
        "POST",
        "/v1/embeddings",
        {"input": ["a"] * 9, "model": "alpha"},
        JSON,
        413,
        "too_many_inputs",
        ("limit of 8",),
    ),
    (
        "body over the limit",
        "POST",
        "/embed",
        {"inputs": ["x" * (1 << 20)]},
        JSON,
        413,
        "payload_too_large",
        ("max_request_bytes",),
    ),
    # names
    (
        "unknown prefix",
        "POST",
        "/embed",
        {"inputs": "x", "prefixes": ["nope"]},
        JSON,
        404,
        "prefix_not_found",
        ("'nope'", "base, alpha, beta, gamma"),
    ),
    (
        "a 60,000-character name",
        "POST",
        "/embed",
        {"inputs": "x", "prefixes": ["n" * 60_000]},
        JSON,
        404,
        "prefix_not_found",
        ("nnnn...",),
    ),
    (
        "disabled prefix",
        "POST",
        "/embed",
        {"inputs": "x", "prefixes": ["gamma"]},
        JSON,
        409,
        "prefix_disabled",
        ("'gamma'",),
    ),
    (
        "unknown model",
        "POST",
        "/v1/embeddings",
        {"input": "x", "model": "gpt-4"},
        JSON,
        404,
        "prefix_not_found",
        ("'gpt-4'", "fake-model"),
    ),
    # formats
    (
        "bad encoding",
        "POST",
        "/embed",
        {"inputs": "x", "encoding": "hex"},
        JSON,
        422,
        "validation_error",
        ("encoding", "'hex'", "'int8'", "'uint8'", "'binary'", "'ubinary'"),
    ),
    (
        "a quantized encoding on the OpenAI route",
        "POST",
        "/v1/embeddings",
        {"input": "x", "model": "alpha", "encoding_format": "ubinary"},
        JSON,
        422,
        "validation_error",
        ("encoding_format", "'float'", "'base64'"),
    ),
    (
        "bad encoding_format",
        "POST",
        "/v1/embeddings",
        {"input": "x", "model": "alpha", "encoding_format": "int8"},
        JSON,
        422,
        "validation_error",
        ("encoding_format",),
    ),
    (
        "bad combine",
        "POST",
        "/embed",
        {"inputs": "x", "combine": "sum"},
        JSON,
        422,
        "validation_error",
        ("combine",),
    ),
    (
        "a 50,000-character enum value",
        "POST",
        "/embed",
        {"inputs": "x", "encoding": "e" * 50_000},
        JSON,
        422,
        "validation_error",
        ("eeee...",),
    ),
    # JSON and content type
    ("bad JSON", "POST", "/embed", b'{"inputs": ["a",', JSON, 400, "malformed_json", ("malformed JSON",)),
    (
        "JSON nested 100,000 deep",
        "POST",
        "/embed",
        b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        JSON,
        400,
        "malformed_json",
        ("could not be read as JSON",),
    ),
    (
        "a 5,000-digit number",
        "POST",
        "/v1/embeddings",
        b'{"input": "x", "model": "alpha", "dimensions": ' + b"9" * 5000 + b"}",
        JSON,
        400,
        "malformed_json",
        ("could not be read as JSON",),
    ),
    (
        "latin-1 body",
        "POST",
        "/embed",
        '{"inputs": "caf\xe9"}'.encode("latin-1"),
        JSON,
        400,
        "malformed_json",
        ("UTF-8",),
    ),
    (
        "form body",
        "POST",
        "/embed",
        b"inputs=x",
        {"content-type": "application/x-www-form-urlencoded"},
        422,
        "validation_error",
        ("JSON object",),
    ),
    (
        "text/plain body",
        "POST",
        "/embed",
        b"hello",
        {"content-type": "text/plain"},
        422,
        "validation_error",
        ("JSON object",),
    ),
    # routes and methods
    ("unknown route", "POST", "/embedz", {"inputs": "x"}, JSON, 404, "not_found", ("no route POST /embedz",)),
    ("wrong method", "PUT", "/embed", {"inputs": "x"}, JSON, 405, "method_not_allowed", ("PUT",)),
    ("PUT base", "PUT", "/prefixes/base", b"anything", {}, 400, "invalid_input", ("base is built in",)),
    (
        "PATCH base off",
        "PATCH",
        "/prefixes",
        {"base": {"enabled": False}},
        JSON,
        400,
        "invalid_input",
        ("base is built in",),
    ),
    ("PATCH not an object", "PATCH", "/prefixes", ["alpha"], JSON, 400, "invalid_input", ("JSON object",)),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = fill_folder(tmp_path_factory.mktemp("prefixes"))
    (folder / "state.json").write_text('{"version": 1, "disabled": ["gamma"]}')
    with fake_app(folder, max_request_bytes=1 << 20) as (c, _, _):
        yield c


@pytest.mark.parametrize(
    ("name", "method", "route", "body", "headers", "status", "code", "fragments"),
    TABLE,
    ids=[t[0] for t in TABLE],
)
def test_bad_request_table(
    client: TestClient,
    name: str,
    method: str,
    route: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    code: str,
    fragments: tuple[str, ...],
) -> None:
    r = client.request(method, route, content=raw(body), headers=headers)
    message = assert_error(r, status, code, *fragments)
    assert len(message) < 1000, message  # never echoes a large input back
    if status == 405:
        assert r.headers["allow"]


def test_bad_requests_never_fail_good_ones_running_beside_them(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = fill_folder(tmp_path_factory.mktemp("beside"))
    (folder / "state.json").write_text('{"version": 1, "disabled": ["gamma"]}')
    texts = [f"good request number {i}" for i in range(12)]
    with fake_app(folder, max_request_bytes=1 << 20) as (client, fake, runtime):

        async def burst() -> tuple[list[httpx.Response], list[httpx.Response]]:
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
                bad = [ac.request(m, r, content=raw(b), headers=h) for _, m, r, b, h, *_ in TABLE]
                good = [ac.post("/embed", json={"inputs": [t], "prefixes": ["alpha", "base"]}) for t in texts]
                results = await asyncio.gather(*bad, *good)
            return list(results[: len(bad)]), list(results[len(bad) :])

        assert client.portal is not None
        bad, good = client.portal.call(burst)
        for row, r in zip(TABLE, bad, strict=True):
            assert r.status_code == row[5], (row[0], r.text)
        for text, r in zip(texts, good, strict=True):
            assert r.status_code == 200, r.text
            want = expected_vectors(fake, runtime, ["alpha", "base"], [text])[0]
            got = [r.json()["data"][0]["embeddings"][n] for n in ("alpha", "base")]
            np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_huge_prefix_list_is_refused_at_its_length(client: TestClient) -> None:
    # 15.2: 40,000 names once took 22 s (a quadratic duplicate check on the event loop).
    names = [f"p{i}" for i in range(40_000)]
    assert_error(
        client.post("/embed", json={"inputs": "x", "prefixes": names}),
        422,
        "validation_error",
        "40000 names",
        f"limit of {MAX_REQUEST_PREFIXES}",
        "MAX_REQUEST_PREFIXES",
    )
    # Refused before the items are looked at: 40,000 non-strings give one error, not 40,000.
    message = assert_error(
        client.post("/embed", json={"inputs": "x", "prefixes": list(range(40_000))}), 422, "validation_error"
    )
    assert message.count(";") == 0
    assert "40000 names" in message


def test_a_list_at_the_cap_is_checked_item_by_item(client: TestClient) -> None:
    names = [f"p{i}" for i in range(MAX_REQUEST_PREFIXES)]
    assert_error(
        client.post("/embed", json={"inputs": "x", "prefixes": names}), 404, "prefix_not_found", "'p0'"
    )
    assert_error(
        client.post("/embed", json={"inputs": "x", "prefixes": ["alpha"] * MAX_REQUEST_PREFIXES}),
        400,
        "invalid_input",
        "'alpha' more than once",
    )


def test_duplicates_are_all_found_and_the_message_stays_short() -> None:
    names = [f"p{i % 500}" for i in range(MAX_REQUEST_PREFIXES)]
    with pytest.raises(InvalidInput) as err:
        check_prefix_list(names)
    assert "(and 490 more)" in err.value.message
    assert len(err.value.message) < 300
    assert check_prefix_list(["b", "a"]) == ["b", "a"]


@pytest.mark.parametrize("route", ["/health", "/ready"])
def test_head_on_probes_is_200_without_a_body(client: TestClient, route: str) -> None:
    # 15.13: load balancers probe with HEAD; it was 405.
    r = client.head(route)
    assert r.status_code == 200, r.text
    assert r.content == b""
    assert client.get(route).status_code == 200
