"""Issue 23 item 2: response headers stay small at any number of prefixes. At 2,000 enabled prefixes the
``x-prefix-digests`` list (about 142 KB) made curl fail ("Out of memory") and httpx and the official
OpenAI client fail ("Receive buffer too long"). Past 4 KiB the list gives way to the set digest, which
``GET /v1/prefix-sets/{digest}`` resolves. Checked with the three real clients on a real socket."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator

import httpx
import openai
import pytest

from service.app import create_app
from service.config import Settings
from service.digests import DIGESTS_HEADER, MAX_DIGESTS_HEADER_BYTES, SET_DIGEST_HEADER
from tests.support.fake_encoder import FakeEncoder
from tests.support.http import fill_folder, wait_ready
from tests.support.inthread import running_server

N = 2_000
MODEL = "fake-model"
HEADER_LIMIT = 8 * 1024  # every response header together


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    folder = fill_folder(tmp_path_factory.mktemp("many"), tuple(f"p{i:04d}" for i in range(N)))
    settings = Settings(
        prefix_dir=folder,
        served_model_name=MODEL,
        log_level="warning",
        watch=False,
        default_prefixes="enabled",
    )
    app = create_app(settings, encoder=FakeEncoder())
    with running_server(app, settings) as base:
        with httpx.Client(base_url=base, timeout=60) as client:
            wait_ready(client, 120)
            listing = client.get("/prefixes").json()["prefixes"]
        yield base, [(p["name"], p["digest"]) for p in listing]


def _lookup(base: str, digest: str) -> list[tuple[str, str]]:
    r = httpx.get(f"{base}/v1/prefix-sets/{digest}", timeout=60)
    assert r.status_code == 200, r.text
    pairs = [(p["name"], p["digest"]) for p in r.json()["prefixes"]]
    listed = ",".join(f"{n}={d}" for n, d in pairs)
    assert hashlib.sha256(listed.encode()).hexdigest() == digest  # the client can check the lookup
    return pairs


def test_curl_gets_the_openai_route_with_small_headers(server: tuple[str, list[tuple[str, str]]]) -> None:
    base, bank = server
    body = json.dumps({"model": MODEL, "input": ["the cat sat"]})
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-D",
            "-",
            "-H",
            "content-type: application/json",
            "-d",
            body,
            f"{base}/v1/embeddings",
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    head, _, payload = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert len(head) < HEADER_LIMIT
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    assert DIGESTS_HEADER not in headers
    assert _lookup(base, headers[SET_DIGEST_HEADER]) == bank  # base and the 2,000 files, in bank order
    assert len(json.loads(payload)["data"][0]["embedding"]) == 8 * (N + 1)


def test_httpx_gets_both_routes(server: tuple[str, list[tuple[str, str]]]) -> None:
    base, bank = server
    with httpx.Client(base_url=base, timeout=120) as client:
        r = client.post("/embed", json={"inputs": "the cat sat"})
        assert r.status_code == 200
        assert sum(len(k) + len(v) + 4 for k, v in r.headers.items()) < HEADER_LIMIT
        assert DIGESTS_HEADER not in r.headers
        body = [(p["name"], p["digest"]) for p in r.json()["prefixes"]]
        assert body == bank
        assert _lookup(base, r.headers[SET_DIGEST_HEADER]) == body
        r = client.post("/v1/embeddings", json={"model": "p0007", "input": "x"})
        assert r.headers[DIGESTS_HEADER] == f"p0007={dict(bank)['p0007']}"  # small sets keep the list
        listed = r.headers[DIGESTS_HEADER].encode()
        assert r.headers[SET_DIGEST_HEADER] == hashlib.sha256(listed).hexdigest()
        # a request naming 1,024 prefixes: its set is remembered for the lookup too
        names = [n for n, _ in bank[1:1025]]
        r = client.post("/embed", json={"inputs": "x", "prefixes": names, "combine": "concat"})
        assert r.status_code == 200, r.text
        assert _lookup(base, r.headers[SET_DIGEST_HEADER]) == [(n, dict(bank)[n]) for n in names]
        r = client.get(f"/v1/prefix-sets/{'0' * 64}")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "prefix_set_not_found")


def test_the_official_openai_client(server: tuple[str, list[tuple[str, str]]]) -> None:
    base, bank = server
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=["the cat sat", "hello"])
    parsed = raw.parse()
    assert len(parsed.data) == 2
    assert len(parsed.data[0].embedding) == 8 * (N + 1)
    assert _lookup(base, raw.headers[SET_DIGEST_HEADER]) == bank
    assert MAX_DIGESTS_HEADER_BYTES < HEADER_LIMIT
