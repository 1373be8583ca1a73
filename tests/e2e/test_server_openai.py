"""The official ``openai`` client against a real server process serving all-MiniLM-L6-v2."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import torch

from service.backend import build_torch_encoder
from service.config import Settings
from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.direct import embed_sync
from service.engine.prefix import base_prefix
from service.registry.folder import scan_folder
from service.registry.limits import PrefixLimits
from service.wire.encodings import l2_normalize
from tests.support.server_process import ServerProcess, serve_process, stop_gracefully

pytestmark = pytest.mark.slow

TEXTS = ["The movie was wonderful.", "Stocks fell sharply on Monday after the report."]
KEY = "sk-test-key"


@pytest.fixture(scope="module")
def prefix_dir(tmp_path_factory: pytest.TempPathFactory, minilm: Backbone) -> Path:
    from service.registry.writer import native_bytes
    from tests.support.prefixes import random_kv

    folder = tmp_path_factory.mktemp("minilm-prefixes")
    for i, name in enumerate(("sentiment", "topic")):
        key, value = random_kv(minilm.spec, 8, seed=i, scale=0.2)
        meta = {"backbone_fingerprint": minilm.spec.fingerprint}
        (folder / f"{name}.safetensors").write_bytes(native_bytes(key, value, meta))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, prefix_dir: Path) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    proc = serve_process(
        log, "--prefix-dir", str(prefix_dir), "--api-key", KEY, "--default-prefixes", "enabled"
    ).start()
    try:
        yield proc.wait_ready()
    finally:
        stop_gracefully(proc)


@pytest.fixture(scope="module")
def engine(minilm: Backbone, prefix_dir: Path) -> Callable[[list[str]], np.ndarray]:
    encoder = build_torch_encoder(Settings(device="cpu", dtype="float32"), backbone=minilm)
    loaded, _ = scan_folder(prefix_dir, minilm.spec, PrefixLimits(max_prefix_len=256, max_file_bytes=1 << 24))
    bank = PrefixBank.build(loaded, base=base_prefix(minilm.spec))

    def vectors(names: list[str]) -> np.ndarray:
        return l2_normalize(embed_sync(encoder, bank, names, TEXTS)[0])

    return vectors


def test_openai_client_round_trip(server: ServerProcess, engine: Callable[[list[str]], np.ndarray]) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    want = engine(["base", "sentiment", "topic"])[:, 1:]

    one = client.embeddings.create(model="sentiment", input=TEXTS)  # the client asks for base64
    assert one.model == "sentiment"
    assert [d.index for d in one.data] == [0, 1]
    assert one.usage.prompt_tokens == one.usage.total_tokens > len(TEXTS)
    np.testing.assert_allclose([d.embedding for d in one.data], want[:, 0], atol=1e-5)

    floats = client.embeddings.create(model="topic", input=TEXTS[1], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, want[1, 1], atol=1e-5)

    # the served name: base (include_base is on by default), then every enabled prefix, concatenated
    every = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)
    assert len(every.data[0].embedding) == 3 * 384
    all3 = engine(["base", "sentiment", "topic"])
    np.testing.assert_allclose([d.embedding for d in every.data], all3.reshape(2, -1) / np.sqrt(3), atol=1e-5)

    assert {m.id for m in client.models.list()} == {"all-MiniLM-L6-v2", "base", "sentiment", "topic"}

    with pytest.raises(openai.NotFoundError, match="model 'nope' not found"):
        client.embeddings.create(model="nope", input="x")
    with pytest.raises(openai.BadRequestError, match="empty string"):
        client.embeddings.create(model="topic", input=[""])
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).embeddings.create(
            model="topic", input="x"
        )


def test_model_base_is_the_plain_minilm_vector(server: ServerProcess, minilm_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    model = AutoModel.from_pretrained(minilm_path).eval()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    want = l2_normalize(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    got = client.embeddings.create(model="base", input=TEXTS)
    assert got.model == "base"
    np.testing.assert_allclose([d.embedding for d in got.data], want, atol=1e-5)


def test_embed_route_on_the_real_model(
    server: ServerProcess, engine: Callable[[list[str]], np.ndarray]
) -> None:
    import httpx

    headers = {"authorization": f"Bearer {KEY}"}
    doc = httpx.post(f"{server.url}/embed", json={"inputs": TEXTS}, headers=headers, timeout=30).json()
    want = engine(["base", "sentiment", "topic"])[:, 1:]
    assert doc["model"] == "all-MiniLM-L6-v2"
    for i, item in enumerate(doc["data"]):
        np.testing.assert_allclose(item["embeddings"]["sentiment"], want[i, 0], atol=1e-5)
        np.testing.assert_allclose(item["embeddings"]["topic"], want[i, 1], atol=1e-5)
    info = httpx.get(f"{server.url}/info", timeout=30).json()  # open without a key
    assert info["model"] == "all-MiniLM-L6-v2"
    assert info["dim"] == 384
    assert info["limits"]["max_input_tokens"] == 256
