"""GPU copies of the engine checks: skipped where torch.cuda.is_available() is False."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.engine.backbone import load_backbone
from service.engine.bank import PrefixBank
from service.engine.prefix import LoadedPrefix
from service.engine.torch_encoder import TorchEncoder
from tests.support.prefixes import random_kv

TEXTS = ["a short text", "a much longer text about the weather, the markets and the football results"]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_matches_cpu_fp32(minilm_path: Path, dtype: str) -> None:
    cpu = TorchEncoder(load_backbone(minilm_path, "cpu", "float32"), chunk_rows=0)
    gpu = TorchEncoder(load_backbone(minilm_path, "cuda", dtype), chunk_rows=0)
    prefixes = []
    for i, n in enumerate([4, 16, 9]):
        key, value = random_kv(cpu.spec, n, seed=i)
        prefixes.append(LoadedPrefix(f"p{i}", f"d{i}", key, value, "peft", "test", "native"))
    bank = PrefixBank.build(prefixes)
    batch = cpu.tokenize(TEXTS, max_length=128, truncate=True)
    ref = cpu.encode(batch, bank, [0, 1, 2])
    got = gpu.encode(batch, bank, [0, 1, 2])
    if dtype == "float32":
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    cos = (got * ref).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cos.min() > 0.999
