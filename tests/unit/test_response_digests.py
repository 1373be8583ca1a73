"""Every embedding response names the prefixes and digests it used (header `x-prefix-digests`),
and the official OpenAI client still parses it (issue 14.5)."""

from __future__ import annotations

from pathlib import Path

import openai

from service.digests import DIGESTS_HEADER
from tests.support.http import SERVED, fake_app, fill_folder


def parse(header: str) -> list[tuple[str, str]]:
    return [tuple(item.split("=", 1)) for item in header.split(",")]  # type: ignore[misc]


def test_openai_route_names_its_digests_and_the_client_ignores_the_header(tmp_path: Path) -> None:
    with fake_app(fill_folder(tmp_path / "prefixes")) as (client, _, runtime):
        bank = runtime.registry.snapshot.bank
        oai = openai.OpenAI(base_url=f"{client.base_url}/v1", api_key="x", http_client=client, max_retries=0)
        raw = oai.embeddings.with_raw_response.create(model="fake-model", input=["the cat sat", "hi"])
        parsed = raw.parse()  # the client's own model of the response: unchanged
        assert parsed.model == "fake-model"
        assert len(parsed.data) == 2
        assert len(parsed.data[0].embedding) == 8 * len(SERVED)
        assert parse(raw.headers[DIGESTS_HEADER]) == [(n, bank.get(n).digest) for n in SERVED]

        one = oai.embeddings.with_raw_response.create(model="beta", input="x")
        assert parse(one.headers[DIGESTS_HEADER]) == [("beta", bank.get("beta").digest)]
        assert len(one.parse().data[0].embedding) == 8


def test_embed_header_agrees_with_its_body(tmp_path: Path) -> None:
    with fake_app(fill_folder(tmp_path / "prefixes")) as (client, _, _):
        r = client.post("/embed", json={"inputs": "x", "prefixes": ["gamma", "alpha"]})
        assert r.status_code == 200
        body = [(p["name"], p["digest"]) for p in r.json()["prefixes"]]
        assert parse(r.headers[DIGESTS_HEADER]) == body
        assert [n for n, _ in body] == ["gamma", "alpha"]
