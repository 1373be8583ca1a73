"""The built-in ``base`` member is the plain backbone's pooled vector (issue 11.1).

The reference is computed independently: transformers' AutoModel (its own attention, no prefix
machinery) and the pooling written out here, not ``service.engine.pooling``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openai
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModel, AutoTokenizer

from service.app import create_app
from service.backend import build_torch_encoder
from service.config import Settings
from service.engine.backbone import Backbone, load_backbone
from service.engine.bank import PrefixBank
from service.engine.direct import embed_sync
from service.engine.prefix import BASE_NAME, LoadedPrefix, base_prefix
from service.engine.torch_encoder import TorchEncoder
from service.registry.writer import native_bytes
from service.wire.encodings import l2_normalize
from tests.support.http import wait_ready

TEXTS = ["the cat sat on the mat", "hi", "a somewhat longer sentence, so that the batch is padded"]
LAYERS = 2  # multilayer pooling: the last two of the tiny model's three hidden states


def reference(path: Path, pooling: str, texts: list[str]) -> np.ndarray:
    """The plain backbone's vectors, [B, dim]."""
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**enc, output_hidden_states=True).hidden_states
    mask = enc["attention_mask"].unsqueeze(-1).float()

    def mean(h: torch.Tensor) -> torch.Tensor:
        return (h * mask).sum(1) / mask.sum(1)

    if pooling == "mean":
        out = mean(states[-1])
    elif pooling == "cls":
        out = states[-1][:, 0]
    else:
        out = sum(mean(h) for h in states[-LAYERS:]) / LAYERS
    return out.numpy()


def prefix(backbone: Backbone, name: str, seed: int, length: int, convention: str = "peft") -> LoadedPrefix:
    g = torch.Generator().manual_seed(seed)
    s = backbone.spec
    shape = (s.num_layers, s.num_heads, length, s.head_dim)
    key, value = torch.randn(shape, generator=g) * 0.5, torch.randn(shape, generator=g) * 0.5
    return LoadedPrefix(name, f"d{seed}", key, value, convention, name, "native")


@pytest.mark.parametrize("pooling", ["mean", "cls", "multilayer"])
def test_base_is_the_plain_backbone_alone_and_beside_prefixes(tiny_bert_path: Path, pooling: str) -> None:
    backbone = load_backbone(tiny_bert_path, device="cpu", dtype="float32")
    encoder = TorchEncoder(backbone, pooling=pooling, pooling_layers=LAYERS, chunk_rows=0)
    files = [prefix(backbone, "alpha", 1, 4), prefix(backbone, "beta", 2, 7, convention="none")]
    bank = PrefixBank.build(files, base=base_prefix(backbone.spec))
    assert bank.names == [BASE_NAME, "alpha", "beta"]
    want = reference(tiny_bert_path, pooling, TEXTS)

    alone, _ = embed_sync(encoder, bank, [BASE_NAME], TEXTS)
    np.testing.assert_allclose(alone[:, 0], want, atol=1e-5)

    mixed, _ = embed_sync(encoder, bank, ["alpha", BASE_NAME, "beta"], TEXTS)  # one call, three rows a text
    np.testing.assert_allclose(mixed[:, 1], want, atol=1e-5)
    for column, name in ((0, "alpha"), (2, "beta")):  # the prefixes are not disturbed by base's row
        each, _ = embed_sync(encoder, bank, [name], TEXTS)
        np.testing.assert_allclose(mixed[:, column], each[:, 0], atol=1e-5)
        assert np.abs(each[:, 0] - want).max() > 1e-3  # and a prefix does change the vector


def test_base_digest_names_the_backbone(tiny_bert: Backbone, minilm: Backbone) -> None:
    one, two = base_prefix(tiny_bert.spec), base_prefix(minilm.spec)
    assert one.digest == base_prefix(tiny_bert.spec).digest
    assert one.digest != two.digest
    assert len(one.digest) == 64  # the format of every file prefix's digest (sha256 hex)
    assert (one.prefix_len, one.first_layer, one.builtin) == (0, tiny_bert.spec.num_layers, True)
    assert tuple(one.key.shape) == (0, tiny_bert.spec.num_heads, 0, tiny_bert.spec.head_dim)


@pytest.fixture
def served(tmp_path: Path, tiny_bert_path: Path, tiny_bert: Backbone):  # type: ignore[no-untyped-def]
    folder = tmp_path / "prefixes"
    folder.mkdir()
    for i, name in enumerate(("alpha", "beta")):
        p = prefix(tiny_bert, name, i, 3 + i)
        meta = {"backbone_fingerprint": tiny_bert.spec.fingerprint}
        (folder / f"{name}.safetensors").write_bytes(native_bytes(p.key, p.value, meta))
    settings = Settings(
        model=tiny_bert_path, prefix_dir=folder, device="cpu", dtype="float32", watch=False, warmup=False
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client, build_torch_encoder(settings, backbone=tiny_bert)


def test_base_over_http_and_the_official_openai_client(served) -> None:  # type: ignore[no-untyped-def]
    client, encoder = served
    want = l2_normalize(reference(encoder.backbone.path, "mean", TEXTS))

    # /v1/embeddings with model "base", through the official client (it asks for base64)
    oai = openai.OpenAI(base_url=f"{client.base_url}/v1", api_key="unused", http_client=client, max_retries=0)
    got = oai.embeddings.create(model=BASE_NAME, input=TEXTS)
    assert got.model == BASE_NAME
    np.testing.assert_allclose([d.embedding for d in got.data], want, atol=1e-5)

    # /embed: base by name, in the request's order, beside prefixes
    doc = client.post("/embed", json={"inputs": TEXTS, "prefixes": ["beta", "base", "alpha"]}).json()
    assert [p["name"] for p in doc["prefixes"]] == ["beta", "base", "alpha"]
    np.testing.assert_allclose([d["embeddings"]["base"] for d in doc["data"]], want, atol=1e-5)
    cat = client.post(
        "/embed", json={"inputs": TEXTS, "prefixes": ["beta", "base"], "combine": "concat"}
    ).json()
    beta = np.array([d["embeddings"]["beta"] for d in doc["data"]])
    np.testing.assert_allclose(
        [d["embedding"] for d in cat["data"]], np.concatenate([beta, want], 1) / np.sqrt(2), atol=1e-5
    )

    # listed as built in, first; cannot be disabled, uploaded or deleted
    listing = client.get("/prefixes").json()["prefixes"]
    assert [p["name"] for p in listing] == ["base", "alpha", "beta"]
    base = listing[0]
    assert (base["kind"], base["enabled"], base["first_layer"], base["prefix_len"]) == ("builtin", True, 2, 0)
    assert base["digest"] == base_prefix(encoder.spec).digest
    for r in (
        client.patch("/prefixes", json={"base": {"enabled": False}}),
        client.patch("/prefixes/base", json={"enabled": False}),
    ):
        assert r.status_code == 400, r.text
        assert "base is built in" in r.json()["error"]["message"]
    assert client.patch("/prefixes/base", json={"enabled": True}).status_code == 200  # a no-op
    put = client.put("/prefixes/base", content=b"anything")
    assert put.status_code == 400
    assert "base is built in" in put.json()["error"]["message"]
    assert 400 <= client.delete("/prefixes/base").status_code < 500
    assert [p["name"] for p in client.get("/prefixes").json()["prefixes"]] == ["base", "alpha", "beta"]


def test_prefixes_null_includes_base_only_when_the_setting_says(tmp_path: Path, tiny_bert_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    for include in (True, False):
        settings = Settings(
            model=tiny_bert_path,
            prefix_dir=folder,
            device="cpu",
            watch=False,
            warmup=False,
            include_base=include,
            default_prefixes="enabled",
        )
        with TestClient(create_app(settings)) as client:
            wait_ready(client)
            r = client.post("/embed", json={"inputs": "x"})
            if include:
                assert [p["name"] for p in r.json()["prefixes"]] == ["base"]
            else:
                assert r.status_code == 409  # no file prefix, and base is left out
            assert client.post("/embed", json={"inputs": "x", "prefixes": ["base"]}).status_code == 200
