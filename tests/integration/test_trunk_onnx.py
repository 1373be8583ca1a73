"""Shared-trunk prefixes on the ONNX backend (tiny random BERT and RoBERTa): equal to torch, one
export per fan-out depth, exported on first use, and a hot-loaded prefix of a depth already exported
causes no new export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.backend import build_onnx_encoder
from service.config import Settings
from service.engine.backbone import load_backbone
from service.engine.bank import PrefixBank
from service.engine.prefix import base_prefix
from service.engine.torch_encoder import TorchEncoder
from tests.support.prefixes import trunk_prefix

TEXTS = [
    "short",
    "a much longer text that needs quite a few more tokens",
    "x",
    "another one, with punctuation!",
]
TOL = 1e-4


@pytest.mark.parametrize(("family", "pooling"), [("bert", "mean"), ("roberta", "multilayer")])
def test_trunk_prefixes_onnx_equal_torch_one_export_per_depth(
    family: str,
    pooling: str,
    tiny_bert_path: Path,
    tiny_roberta_path: Path,
    tmp_path: Path,
    count_exports: list[Path],
) -> None:
    path = tiny_bert_path if family == "bert" else tiny_roberta_path
    backbone = load_backbone(path, device="cpu", dtype="float32")
    layers = backbone.spec.num_layers
    settings = Settings(
        model=path,
        backend="onnx",
        device="cpu",
        dtype="float32",
        onnx_cache_dir=tmp_path,
        pooling=pooling,
        pooling_layers=2,
    )
    onnx_enc = build_onnx_encoder(settings)
    assert len(count_exports) == 1
    assert count_exports[0].name.endswith("-fan0.onnx")
    torch_enc = TorchEncoder(backbone, pooling=pooling, pooling_layers=2, chunk_rows=0)
    members = [
        trunk_prefix(backbone.spec, "all", 0, 3, seed=1, convention="peft"),
        trunk_prefix(backbone.spec, "top_a", layers - 1, 4, seed=2),
        trunk_prefix(backbone.spec, "top_b", layers - 1, 2, seed=3),
        base_prefix(backbone.spec),
    ]
    bank = PrefixBank.build(members)
    batch = onnx_enc.tokenize(TEXTS, max_length=40, truncate=True)
    slots = list(range(len(bank)))
    # the first call needing depth L-1 starts its export in the background and runs at depth 0 (exact);
    # once the export has landed the same calls run at L-1
    for wait in (False, True):
        if wait:
            onnx_enc.wait_for_exports()
        for group_by_depth in (True, False):
            onnx_enc.group_by_depth = torch_enc.group_by_depth = group_by_depth
            got, ref = onnx_enc.encode(batch, bank, slots), torch_enc.encode(batch, bank, slots)
            np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)
    # the deeper depth was exported once, on first use, next to the first file, its depth in the name
    assert [p.name.rsplit("-", 1)[-1] for p in count_exports] == ["fan0.onnx", f"fan{layers - 1}.onnx"]
    assert count_exports[1].parent == count_exports[0].parent
    assert onnx_enc.exported_depths == [0, layers - 1]

    # a prefix hot-loaded at a depth already exported: a new bank snapshot, no new export
    hot = PrefixBank.build([*members, trunk_prefix(backbone.spec, "top_c", layers - 1, 6, seed=4)])
    got = onnx_enc.encode(batch, hot, list(range(len(hot))))
    np.testing.assert_allclose(got, torch_enc.encode(batch, hot, list(range(len(hot)))), atol=TOL, rtol=0)
    assert len(count_exports) == 2

    # a new encoder on the same cache reuses both files
    again = build_onnx_encoder(settings)
    again.encode(batch, hot, [len(hot) - 1])
    again.wait_for_exports()
    np.testing.assert_allclose(again.encode(batch, hot, [len(hot) - 1]), got[:, -1:], atol=1e-6, rtol=0)
    assert len(count_exports) == 2
