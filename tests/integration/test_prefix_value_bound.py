"""The value bound of prefix files (service/registry/limits.py, MAX_ABS_VALUE): a prefix with every
key and value entry at +-bound keeps all-MiniLM-L6-v2's vectors finite, in float32 and float16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.backend import build_encoder
from service.config import Settings
from service.engine.bank import PrefixBank
from service.engine.direct import embed_sync
from service.engine.prefix import LoadedPrefix
from service.registry.limits import MAX_ABS_VALUE


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_prefixes_at_the_bound_keep_vectors_finite(dtype: str) -> None:
    encoder = build_encoder(Settings(device="cpu", dtype=dtype, backend="torch", warmup=False))
    s = encoder.spec
    shape = (s.num_layers, s.num_heads, 8, s.head_dim)
    signs = torch.randn(shape, generator=torch.Generator().manual_seed(0)).sign()
    prefixes = [
        LoadedPrefix(
            "plus",
            "d0",
            torch.full(shape, MAX_ABS_VALUE),
            torch.full(shape, MAX_ABS_VALUE),
            "none",
            "x",
            "native",
        ),
        LoadedPrefix(
            "minus",
            "d1",
            torch.full(shape, -MAX_ABS_VALUE),
            torch.full(shape, -MAX_ABS_VALUE),
            "none",
            "x",
            "native",
        ),
        LoadedPrefix("mixed", "d2", signs * MAX_ABS_VALUE, -signs * MAX_ABS_VALUE, "peft", "x", "native"),
    ]
    bank = PrefixBank.build(prefixes)
    texts = [
        "I loved this film",
        "Stocks fell sharply on Monday after the report. " * 8,
        "zzzz !!!! 12345 ####",
    ]
    vectors, _ = embed_sync(encoder, bank, bank.names, texts)
    out = np.asarray(vectors)
    assert out.shape == (3, 3, s.hidden_size)
    assert np.isfinite(out).all()
