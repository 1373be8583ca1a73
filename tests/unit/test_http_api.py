"""HTTP behaviour on a deterministic fake encoder: /embed, /v1/embeddings, /prefixes, ops routes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.runtime import Runtime
from service.wire.encodings import ENCODINGS, decode_base64_float, int8_quantize, l2_normalize, unpack_bits
from tests.support.fake_encoder import FAKE_SPEC, FakeEncoder
from tests.support.http import (
    SERVED,
    assert_error,
    expected_vectors,
    fake_app,
    fake_prefix_bytes,
    fill_folder,
)
from tests.support.metrics import metric_value
from tests.support.waiting import wait_until

TEXTS = ["the cat sat", "on the mat today", "hi"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, FakeEncoder, Runtime]]:
    with fake_app(fill_folder(tmp_path / "prefixes")) as parts:
        yield parts


def test_embed_returns_every_enabled_prefix_vector_from_one_encoder_call(served) -> None:
    client, fake, runtime = served
    r = client.post("/embed", json={"inputs": TEXTS})  # prefixes null: base (include_base) and every file
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [(c.size, c.names) for c in fake.calls] == [(3, SERVED)]  # every prefix (base too), every text
    bank = runtime.registry.snapshot.bank
    assert doc["model"] == "fake-model"
    assert doc["prefixes"] == [{"name": n, "digest": bank.get(n).digest, "dim": 8} for n in SERVED]
    assert doc["usage"] == {"prompt_tokens": 5 + 6 + 3, "total_tokens": 14}
    want = expected_vectors(fake, runtime, list(SERVED), TEXTS)
    assert [d["index"] for d in doc["data"]] == [0, 1, 2]
    for i, item in enumerate(doc["data"]):
        assert list(item["embeddings"]) == list(SERVED)
        got = np.array([item["embeddings"][n] for n in SERVED])
        np.testing.assert_allclose(got, want[i], atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_concat_follows_the_order_of_prefixes(served) -> None:
    client, fake, runtime = served
    r = client.post(
        "/embed", json={"inputs": "the cat sat", "prefixes": ["gamma", "alpha"], "combine": "concat"}
    )
    doc = r.json()
    assert [p["name"] for p in doc["prefixes"]] == ["gamma", "alpha"]
    want = expected_vectors(fake, runtime, ["gamma", "alpha"], ["the cat sat"])[0]
    got = np.array(doc["data"][0]["embedding"])
    np.testing.assert_allclose(got, np.concatenate(want) / np.sqrt(2), atol=1e-6)
    assert abs(np.linalg.norm(got) - 1.0) < 1e-6


def test_unnormalized_and_encoded_vectors_decode_to_the_float_vectors(served) -> None:
    client, fake, runtime = served
    raw = fake.encode(
        fake.tokenize(TEXTS, max_length=32, truncate=True), runtime.registry.snapshot.bank, [2]
    )[:, 0]  # slot 2: base, alpha, beta
    docs = {
        enc: client.post(
            "/embed", json={"inputs": TEXTS, "prefixes": ["beta"], "encoding": enc, "normalize": False}
        ).json()
        for enc in ("float", "base64", "binary", "ubinary", "int8", "uint8")
    }
    for i in range(len(TEXTS)):
        np.testing.assert_allclose(docs["float"]["data"][i]["embeddings"]["beta"], raw[i], rtol=1e-6)
        np.testing.assert_array_equal(
            decode_base64_float(docs["base64"]["data"][i]["embeddings"]["beta"]), raw[i]
        )
        # uncalibrated (the fake folder's files carry none): signs at 0, the per-vector int8 scale
        for enc in ("binary", "ubinary"):
            bits = unpack_bits(docs[enc]["data"][i]["embeddings"]["beta"], 8, enc)
            np.testing.assert_array_equal(bits, raw[i] > 0)
        unit = l2_normalize(raw[i])
        assert docs["int8"]["data"][i]["embeddings"]["beta"] == int8_quantize(unit).tolist()
        assert (
            docs["uint8"]["data"][i]["embeddings"]["beta"] == (int8_quantize(unit).astype(int) + 128).tolist()
        )
    for enc in ("binary", "ubinary", "int8", "uint8"):
        assert [p["calibration"] for p in docs[enc]["prefixes"]] == ["uncalibrated"]


def test_openai_route_serves_a_prefix_or_the_concat_of_enabled_prefixes(served) -> None:
    client, fake, runtime = served
    one = client.post("/v1/embeddings", json={"input": "the cat sat", "model": "beta"}).json()
    assert one["object"] == "list"
    assert one["model"] == "beta"
    assert one["data"][0]["object"] == "embedding"
    assert one["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    want = expected_vectors(fake, runtime, ["alpha", "beta", "gamma"], ["the cat sat"])[0]
    np.testing.assert_allclose(one["data"][0]["embedding"], want[1], atol=1e-6)
    every = client.post(
        "/v1/embeddings", json={"input": ["the cat sat"], "model": "fake-model", "encoding_format": "base64"}
    ).json()
    got = decode_base64_float(every["data"][0]["embedding"])
    every_want = expected_vectors(fake, runtime, list(SERVED), ["the cat sat"])[0]
    np.testing.assert_allclose(got, every_want.reshape(-1) / np.sqrt(4), atol=1e-6)
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["fake-model", *SERVED]


def test_patch_disables_and_the_default_request_omits_the_prefix(served, tmp_path: Path) -> None:
    client, fake, runtime = served
    r = client.patch("/prefixes", json={"beta": {"enabled": False}})
    assert r.status_code == 200, r.text
    assert {p["name"]: p["enabled"] for p in r.json()["prefixes"]} == {
        "base": True,
        "alpha": True,
        "beta": False,
        "gamma": True,
    }
    assert json.loads((tmp_path / "prefixes" / "state.json").read_text())["disabled"] == ["beta"]
    doc = client.post("/embed", json={"inputs": "x"}).json()
    assert [p["name"] for p in doc["prefixes"]] == ["base", "alpha", "gamma"]
    assert_error(
        client.post("/embed", json={"inputs": "x", "prefixes": ["alpha", "beta"]}),
        409,
        "prefix_disabled",
        "'beta'",
        "disabled",
    )
    assert_error(
        client.post("/v1/embeddings", json={"input": "x", "model": "beta"}), 409, "prefix_disabled", "'beta'"
    )
    one = client.patch("/prefixes/beta", json={"enabled": True})
    assert one.status_code == 200
    assert one.json()["enabled"] is True
    assert one.json()["name"] == "beta"
    assert_error(
        client.patch("/prefixes/nope", json={"enabled": True}), 404, "prefix_not_found", "'nope'", "alpha"
    )
    assert_error(
        client.patch("/prefixes", json={"alpha": {"enabled": False}, "nope": {"enabled": False}}),
        404,
        "prefix_not_found",
        "'nope'",
    )
    assert client.get("/prefixes").json()["prefixes"][1]["enabled"] is True  # nothing of it applied


def test_put_uploads_a_prefix_that_is_served_at_once(served) -> None:
    client, fake, runtime = served
    data = fake_prefix_bytes(seed=42, prefix_len=6)
    r = client.put("/prefixes/delta", content=data, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["name"] == "delta"
    assert entry["prefix_len"] == 6
    assert entry["enabled"] is True
    assert entry["metadata"]["task"] == "seed 42"
    doc = client.post("/embed", json={"inputs": "the cat sat", "prefixes": ["delta"]}).json()
    assert doc["prefixes"][0]["digest"] == entry["digest"]
    want = expected_vectors(fake, runtime, ["delta"], ["the cat sat"])[0, 0]
    np.testing.assert_allclose(doc["data"][0]["embeddings"]["delta"], want, atol=1e-6)
    assert client.put("/prefixes/delta", content=fake_prefix_bytes(seed=43)).status_code == 200
    assert_error(
        client.put("/prefixes/bad", content=b"garbage"), 422, "invalid_prefix_file", "bad.safetensors"
    )
    assert_error(client.put("/prefixes/Bad!", content=data), 422, "invalid_prefix_file", "bad prefix name")
    listing = client.get("/prefixes").json()
    assert [p["name"] for p in listing["prefixes"]] == ["base", "alpha", "beta", "delta", "gamma"]
    assert listing["rejected"] == []


def test_a_garbage_file_is_listed_with_its_reason_while_the_others_serve(served, tmp_path: Path) -> None:
    client, fake, runtime = served
    (tmp_path / "prefixes" / "junk.safetensors").write_bytes(b"this is not a prefix file")
    (tmp_path / "prefixes" / "beta.safetensors").write_bytes(b"half a file")  # beta keeps its last version
    wait_until(lambda: len(client.get("/prefixes").json()["rejected"]) >= 2, what="the bad files reported")
    listing = client.get("/prefixes").json()
    reasons = {r["source"]: r["reason"] for r in listing["rejected"]}
    assert set(reasons) == {"beta.safetensors", "junk.safetensors"}
    assert "not a valid safetensors file" in reasons["junk.safetensors"]
    assert [(p["name"], p["stale"]) for p in listing["prefixes"]] == [
        ("base", False),
        ("alpha", False),
        ("beta", True),
        ("gamma", False),
    ]
    doc = client.post("/embed", json={"inputs": "x"}).json()
    assert [p["name"] for p in doc["prefixes"]] == list(SERVED)


def test_a_request_uses_one_snapshot_to_its_end(served) -> None:
    client, fake, runtime = served
    old_digest = runtime.registry.snapshot.bank.get("alpha").digest
    want_old = expected_vectors(fake, runtime, ["alpha"], ["the cat sat"])[0, 0]
    fake.hold()
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.update(
            r=client.post("/embed", json={"inputs": "the cat sat", "prefixes": ["alpha"]})
        )
    )
    worker.start()
    assert fake.entered.wait(timeout=30)  # the request holds its snapshot and is in the encoder
    assert client.put("/prefixes/alpha", content=fake_prefix_bytes(seed=77)).status_code == 200
    fake.release()
    worker.join()
    doc = result["r"].json()
    assert doc["prefixes"][0]["digest"] == old_digest
    np.testing.assert_allclose(doc["data"][0]["embeddings"]["alpha"], want_old, atol=1e-6)
    assert client.post("/embed", json={"inputs": "x"}).json()["prefixes"][0]["digest"] != old_digest


def test_health_ready_info_and_metrics(served) -> None:
    client, fake, runtime = served
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    client.post("/embed", json={"inputs": TEXTS})
    client.post("/embed", json={"inputs": ["a"], "prefixes": ["alpha"]})
    client.post("/embed", json={"inputs": []})
    info = client.get("/info").json()
    assert info["model"] == "fake-model"
    assert info["fingerprint"] == FAKE_SPEC.fingerprint
    assert (info["backend"], info["device"], info["dtype"], info["dim"]) == ("fake", "cpu", "float32", 8)
    assert info["limits"]["max_client_batch"] == 8
    assert info["limits"]["max_input_tokens"] == 32
    assert info["prefixes"] == {
        "loaded": 4,  # the built-in base and three files
        "enabled": 4,
        "rejected": 0,
        "bank_version": runtime.registry.snapshot.bank.version,
    }
    assert info["versions"]["prefix_embed"]
    text = client.get("/metrics").text
    assert metric_value(text, "prefix_embed_forward_calls_total") == 2  # warm-up is not counted
    assert metric_value(text, "prefix_embed_batch_rows_total") == 3 * len(SERVED) + 1
    embed = {"method": "POST", "route": "/embed"}
    assert metric_value(text, "prefix_embed_requests_total", {**embed, "status": "200"}) == 2
    assert metric_value(text, "prefix_embed_requests_total", {**embed, "status": "400"}) == 1
    assert metric_value(text, "prefix_embed_request_duration_seconds_count", {"route": "/embed"}) == 3
    assert metric_value(text, "prefix_embed_prefixes_loaded") == len(SERVED)
    assert metric_value(text, "prefix_embed_prefixes_enabled") == len(SERVED)
    assert metric_value(text, "prefix_embed_queue_depth") == 0
    assert metric_value(text, "prefix_embed_ready") == 1


def test_ready_is_503_until_the_model_is_loaded(tmp_path: Path) -> None:
    app = create_app(Settings(prefix_dir=fill_folder(tmp_path), served_model_name="m"), encoder=FakeEncoder())
    client = TestClient(app)  # no lifespan: nothing loaded yet
    assert client.get("/health").status_code == 200
    assert_error(client.get("/ready"), 503, "not_ready", "loading")
    assert_error(client.post("/embed", json={"inputs": "x"}), 503, "not_ready")


def test_a_failing_encoder_is_a_500_without_details_and_the_next_request_works(served, caplog) -> None:
    client, fake, runtime = served
    fake.fail_with = RuntimeError("secret detail /srv/weights")
    r = client.post("/embed", json={"inputs": "x"})
    assert_error(r, 500, "inference_failed")
    assert "secret" not in r.text
    assert "secret detail" in caplog.text  # logged for the operator
    fake.fail_with = None
    assert client.post("/embed", json={"inputs": "x"}).status_code == 200


class _BrokenRegistry:
    @property
    def snapshot(self) -> None:
        raise KeyError("secret internal state")


def test_an_unexpected_error_is_a_generic_500(served, caplog, monkeypatch) -> None:
    client, fake, runtime = served
    monkeypatch.setattr(runtime.pipeline, "registry", _BrokenRegistry())
    r = client.post("/embed", json={"inputs": "x"})
    assert assert_error(r, 500, "internal_error") == "internal server error"
    assert "secret" not in r.text
    assert "secret internal state" in caplog.text


def test_a_model_that_fails_to_load_keeps_ready_at_503_with_the_reason(tmp_path: Path) -> None:
    app = create_app(Settings(model=tmp_path / "no-such-model", prefix_dir=tmp_path / "prefixes"))
    with TestClient(app) as client:
        runtime = app.state.runtime
        wait_until(lambda: runtime.load_error is not None, 30, "start-up failed")
        assert_error(client.get("/ready"), 503, "not_ready", "model failed to load", "no config.json")
        assert_error(client.post("/embed", json={"inputs": "x"}), 503, "not_ready")
        assert client.get("/health").status_code == 200


def test_the_schema_lists_every_encoding_and_openai_keeps_float_and_base64(served) -> None:
    client, _, _ = served
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["EmbedRequest"]["properties"]["encoding"]["enum"] == list(ENCODINGS)
    assert list(ENCODINGS) == ["float", "base64", "int8", "uint8", "binary", "ubinary"]
    assert schemas["OpenAIEmbeddingRequest"]["properties"]["encoding_format"]["enum"] == ["float", "base64"]
