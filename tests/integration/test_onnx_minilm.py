"""The ONNX backend on the real default model (all-MiniLM-L6-v2), once: export, then parity with torch
for P=5 prefixes of mixed lengths up to 12 (the export saw P=2, Lp=4) and for the plain backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.backend import build_onnx_encoder
from service.config import Settings
from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.prefix import LoadedPrefix
from service.engine.torch_encoder import TorchEncoder
from tests.support.prefixes import base_vectors, random_kv

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Stocks fell sharply after the announcement.",
    "I loved this film",
    "Is this message spam? Click here to win a prize now!!!",
]


@pytest.mark.slow
def test_minilm_onnx_matches_torch(tmp_path: Path, minilm_path: Path, minilm: Backbone) -> None:
    enc = build_onnx_encoder(
        Settings(model=minilm_path, backend="onnx", device="cpu", dtype="float32", onnx_cache_dir=tmp_path)
    )
    assert enc.providers == ["CPUExecutionProvider"]
    torch_enc = TorchEncoder(minilm)
    members = []
    for i, n in enumerate([12, 3, 7, 1, 9]):
        key, value = random_kv(minilm.spec, n, seed=i)
        members.append(
            LoadedPrefix(f"m{i}", f"d{i}", key, value, ("peft", "none")[i % 2], "<test>", "native")
        )
    bank = PrefixBank.build(members)
    batch = torch_enc.tokenize(TEXTS, max_length=torch_enc.max_input_tokens, truncate=True)
    slots = [0, 1, 2, 3, 4]
    np.testing.assert_allclose(
        enc.encode(batch, bank, slots), torch_enc.encode(batch, bank, slots), atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(base_vectors(enc, batch), base_vectors(torch_enc, batch), atol=1e-4, rtol=0)
