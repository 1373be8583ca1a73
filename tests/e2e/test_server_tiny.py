"""Two real server processes (tiny random BERT) sharing one prefix folder, over sockets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.backend import build_torch_encoder
from service.config import Settings
from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.direct import embed_sync
from service.engine.torch_encoder import TorchEncoder
from service.registry.folder import scan_folder
from service.registry.limits import PrefixLimits
from service.wire.encodings import decode_base64_float, l2_normalize, unpack_bits
from tests.support import prefixes
from tests.support.http import BAD_INPUTS
from tests.support.server_process import serve_process, stop_gracefully
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

TEXTS = ["short", "a much longer text with quite a few more tokens than the first", "medium length text"]


def prefix_bytes(backbone: Backbone, seed: int, prefix_len: int = 4) -> bytes:
    return prefixes.prefix_bytes(backbone.spec, prefix_len, seed, task=f"task {seed}")


class Servers:
    def __init__(self, folder: Path, logs: Path, model: Path) -> None:
        self.folder = folder
        self.model_name = model.name
        args = ("--model", str(model), "--prefix-dir", str(folder), "--max-client-batch", "8")
        args += ("--default-prefixes", "enabled")  # `prefixes: null` = every enabled prefix
        args += ("--max-input-tokens", "32", "--max-request-bytes", "4096")
        self.args = args
        self.logs = logs
        self.a = serve_process(logs / "a.log", *args)
        # B gets a setting from the environment instead of a flag
        self.b = serve_process(logs / "b.log", *args, env={"PREFIX_EMBED_SERVED_MODEL_NAME": "tiny-b"})

    def restart_a(self) -> None:
        stop_gracefully(self.a)
        self.a = serve_process(self.logs / "a2.log", *self.args).start().wait_ready()


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, tiny_bert_path: Path, tiny_bert: Backbone
) -> Iterator[Servers]:
    folder = tmp_path_factory.mktemp("shared-prefixes")
    for i, name in enumerate(("alpha", "beta", "gamma")):
        (folder / f"{name}.safetensors").write_bytes(prefix_bytes(tiny_bert, i, prefix_len=2 + i))
    (folder / "state.json").write_text('{"version": 1, "disabled": ["gamma"]}')
    s = Servers(folder, tmp_path_factory.mktemp("logs"), tiny_bert_path)
    s.a.start()
    s.b.start()  # both load at once
    try:
        s.a.wait_ready()
        s.b.wait_ready()
        yield s
    finally:
        stop_gracefully(s.a)
        stop_gracefully(s.b)


@pytest.fixture(scope="module")
def reference(tiny_bert_path: Path, tiny_bert: Backbone) -> TorchEncoder:
    settings = Settings(model=tiny_bert_path, device="cpu", dtype="float32", max_input_tokens=32)
    return build_torch_encoder(settings, backbone=tiny_bert)


def engine(encoder: TorchEncoder, folder: Path, names: list[str], texts: list[str]) -> np.ndarray:
    loaded, _ = scan_folder(folder, encoder.spec, PrefixLimits(max_prefix_len=256, max_file_bytes=1 << 24))
    vectors, _ = embed_sync(encoder, PrefixBank.build(loaded), names, texts)
    return l2_normalize(vectors)


def prefixes_of(client: httpx.Client) -> dict[str, Any]:
    return {p["name"]: p for p in client.get("/prefixes").json()["prefixes"]}


def test_vectors_equal_the_engine_in_every_encoding(servers: Servers, reference: TorchEncoder) -> None:
    with servers.b.client() as b:
        assert b.post("/embed", json={"inputs": "x"}).json()["model"] == "tiny-b"
    with servers.a.client() as c:
        doc = c.post("/embed", json={"inputs": TEXTS}).json()
        assert doc["model"] == servers.model_name
        assert [p["name"] for p in doc["prefixes"]] == ["base", "alpha", "beta"]  # gamma is disabled
        want = engine(reference, servers.folder, ["alpha", "beta"], TEXTS)
        for i, item in enumerate(doc["data"]):
            np.testing.assert_allclose(item["embeddings"]["alpha"], want[i, 0], atol=1e-5)
            np.testing.assert_allclose(item["embeddings"]["beta"], want[i, 1], atol=1e-5)
        concat = c.post(
            "/embed",
            json={"inputs": TEXTS, "prefixes": ["beta", "alpha"], "combine": "concat", "encoding": "base64"},
        ).json()
        for i, item in enumerate(concat["data"]):
            got = decode_base64_float(item["embedding"])
            np.testing.assert_allclose(got, np.concatenate([want[i, 1], want[i, 0]]) / np.sqrt(2), atol=1e-5)
        binary = c.post("/embed", json={"inputs": TEXTS, "prefixes": ["alpha"], "encoding": "binary"}).json()
        floats = c.post("/embed", json={"inputs": TEXTS, "prefixes": ["alpha"]}).json()
        for b, f in zip(binary["data"], floats["data"], strict=True):
            assert len(b["embeddings"]["alpha"]) == 32 // 8  # uncalibrated: the signs at 0
            np.testing.assert_array_equal(
                unpack_bits(b["embeddings"]["alpha"], 32, "binary"), np.array(f["embeddings"]["alpha"]) > 0
            )


def test_every_bad_input_is_a_4xx_never_a_5xx(servers: Servers) -> None:
    with servers.a.client() as c:
        for route, body, status, code, _ in BAD_INPUTS:
            r = c.post(route, json=body)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (route, body, r.text)
        raw = [
            (b'{"inputs": ["a",', 400),
            (b"not json at all", 400),
            (json.dumps({"inputs": ["x" * 5000]}).encode(), 413),
        ]
        for content, status in raw:
            r = c.post("/embed", content=content, headers={"content-type": "application/json"})
            assert r.status_code == status, r.text
            assert r.json()["error"]["message"]
        chunked = c.post("/embed", content=iter([b'{"inputs": ["', b"y" * 5000, b'"]}']))
        assert chunked.status_code == 413
        assert "max_request_bytes" in chunked.text
        assert c.post("/embed", json={"inputs": "still fine"}).status_code == 200


def test_dropped_in_garbage_and_uploaded_files(
    servers: Servers, reference: TorchEncoder, tiny_bert: Backbone
) -> None:
    folder = servers.folder
    with servers.a.client() as a, servers.b.client() as b:
        (folder / "delta.safetensors").write_bytes(prefix_bytes(tiny_bert, 7, prefix_len=3))
        wait_until(lambda: "delta" in prefixes_of(a) and "delta" in prefixes_of(b), what="drop-in listed")
        doc = a.post("/embed", json={"inputs": TEXTS[:1], "prefixes": ["delta"]}).json()
        np.testing.assert_allclose(
            doc["data"][0]["embeddings"]["delta"],
            engine(reference, folder, ["delta"], TEXTS[:1])[0, 0],
            atol=1e-5,
        )

        (folder / "junk.safetensors").write_bytes(b"\x00garbage that is not safetensors")
        wait_until(lambda: a.get("/prefixes").json()["rejected"], what="garbage reported")
        rejected = a.get("/prefixes").json()["rejected"]
        assert [r["source"] for r in rejected] == ["junk.safetensors"]
        assert "junk.safetensors" in rejected[0]["reason"]
        served = a.post("/embed", json={"inputs": "x"}).json()["prefixes"]
        assert [p["name"] for p in served] == ["base", "alpha", "beta", "delta"]  # the others keep serving

        r = a.put("/prefixes/epsilon", content=prefix_bytes(tiny_bert, 8, prefix_len=5))
        assert r.status_code == 201, r.text
        doc = a.post("/embed", json={"inputs": TEXTS[:1], "prefixes": ["epsilon"]}).json()
        assert doc["prefixes"][0]["digest"] == r.json()["digest"]
        np.testing.assert_allclose(
            doc["data"][0]["embeddings"]["epsilon"],
            engine(reference, folder, ["epsilon"], TEXTS[:1])[0, 0],
            atol=1e-5,
        )
        wait_until(lambda: "epsilon" in prefixes_of(b), what="the upload reached the other process")

        for name in ("delta.safetensors", "junk.safetensors", "epsilon.safetensors"):
            (folder / name).unlink()
        wait_until(
            lambda: set(prefixes_of(a)) == set(prefixes_of(b)) == {"base", "alpha", "beta", "gamma"},
            what="cleanup",
        )


def test_patch_converges_across_processes_and_survives_a_restart(servers: Servers) -> None:
    with servers.a.client() as a, servers.b.client() as b:
        r = a.patch("/prefixes", json={"beta": {"enabled": False}})
        assert r.status_code == 200, r.text
        wait_until(lambda: prefixes_of(b)["beta"]["enabled"] is False, what="the replica converged")
        for c in (a, b):
            assert [p["name"] for p in c.post("/embed", json={"inputs": "x"}).json()["prefixes"]] == [
                "base",
                "alpha",
            ]
            err = c.post("/embed", json={"inputs": "x", "prefixes": ["beta"]})
            assert err.status_code == 409
            assert "'beta'" in err.json()["error"]["message"]
            assert "disabled" in err.json()["error"]["message"]
    servers.restart_a()
    with servers.a.client() as a:
        assert {n: p["enabled"] for n, p in prefixes_of(a).items()} == {
            "base": True,
            "alpha": True,
            "beta": False,
            "gamma": False,
        }
        assert [p["name"] for p in a.post("/embed", json={"inputs": "x"}).json()["prefixes"]] == [
            "base",
            "alpha",
        ]
