"""Shared-trunk prefixes in the engine, on real models (MiniLM, tiny random BERT/RoBERTa), no mocks.

A prefix with first_layer S acts in layers S..L-1 only; each text's layers below the call's fan-out
depth run once (B rows), not once per prefix. Checked against an independent computation: the layers
written out by hand from the Hugging Face modules' weights (float64), one text and one prefix at a time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from prometheus_client import CollectorRegistry

from service.batching.prometheus import PrometheusBatcherMetrics
from service.engine.backbone import Backbone, load_backbone
from service.engine.bank import PrefixBank
from service.engine.encoder import ForwardCall
from service.engine.forward import layer_rows
from service.engine.prefix import BASE_NAME, LoadedPrefix, base_prefix
from service.engine.torch_encoder import TorchEncoder
from tests.support.prefixes import base_vectors, trunk_prefix

TEXTS = [
    "short one",
    "a somewhat longer text about markets, interest rates and the weather",
    "x",
    "Transformers encode text; prefixes steer what the encoder attends to.",
]
TOL = 1e-5


# --- the independent reference ------------------------------------------------------------------
def _ln(x: torch.Tensor, mod: torch.nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, mod.normalized_shape, mod.weight.double(), mod.bias.double(), mod.eps)


def _lin(x: torch.Tensor, mod: torch.nn.Linear) -> torch.Tensor:
    return x @ mod.weight.double().T + mod.bias.double()


def reference(
    backbone: Backbone, ids: list[int], prefix: LoadedPrefix | None, pooling: str, pooling_layers: int = 4
) -> np.ndarray:
    """One text under one prefix, every layer written out (float64, no padding, no batching)."""
    model: object = backbone.model
    spec = backbone.spec
    emb = model.embeddings  # type: ignore[attr-defined]
    heads, hd = spec.num_heads, spec.head_dim
    t = len(ids)
    shift = prefix.position_shift if prefix is not None else 0
    positions = torch.arange(t) + spec.position_offset + shift
    tok = torch.tensor(ids)
    x = (
        emb.word_embeddings.weight.double()[tok]
        + emb.position_embeddings.weight.double()[positions]
        + emb.token_type_embeddings.weight.double()[torch.zeros_like(tok)]
    )
    x = _ln(x, emb.LayerNorm)
    states = [x]
    first = prefix.first_layer if prefix is not None else spec.num_layers
    for i, layer in enumerate(model.encoder.layer):  # type: ignore[attr-defined]
        att = layer.attention
        q = _lin(x, att.self.query).view(t, heads, hd).transpose(0, 1)
        k = _lin(x, att.self.key).view(t, heads, hd).transpose(0, 1)
        v = _lin(x, att.self.value).view(t, heads, hd).transpose(0, 1)
        if prefix is not None and i >= first:
            k = torch.cat([prefix.key[i - first].double(), k], dim=1)
            v = torch.cat([prefix.value[i - first].double(), v], dim=1)
        probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1)
        ctx = (probs @ v).transpose(0, 1).reshape(t, heads * hd)
        a = _ln(_lin(ctx, att.output.dense) + x, att.output.LayerNorm)
        inter = F.gelu(_lin(a, layer.intermediate.dense))
        x = _ln(_lin(inter, layer.output.dense) + a, layer.output.LayerNorm)
        states.append(x)
    if pooling == "mean":
        out = x.mean(0)
    elif pooling == "cls":
        out = x[0]
    else:
        out = torch.stack([s.mean(0) for s in states[-pooling_layers:]]).mean(0)
    return out.numpy()


def token_ids(encoder: TorchEncoder, text: str) -> list[int]:
    batch = encoder.tokenize([text], max_length=encoder.max_input_tokens, truncate=True)
    return [int(i) for i in batch.input_ids[0, : batch.lengths[0]]]


@pytest.fixture(scope="module")
def roberta(tiny_roberta_path: Path) -> Backbone:
    return load_backbone(tiny_roberta_path, device="cpu", dtype="float32")


def _mixed(backbone: Backbone) -> list[LoadedPrefix]:
    """Trunk prefixes of several depths and lengths, all-layer ones (both conventions), and base."""
    layers = backbone.spec.num_layers
    depths = sorted({layers // 2, layers - 2, layers - 1} - {0})
    out = [
        trunk_prefix(backbone.spec, "all_peft", 0, 5, seed=1, convention="peft"),
        trunk_prefix(backbone.spec, "all_none", 0, 3, seed=2),
        base_prefix(backbone.spec),
    ]
    for j, s in enumerate(depths):
        out.append(trunk_prefix(backbone.spec, f"trunk{s}a", s, 2 + 3 * j, seed=10 + j))
        out.append(trunk_prefix(backbone.spec, f"trunk{s}b", s, 6, seed=20 + j))
    return out


@pytest.mark.parametrize("pooling", ["mean", "cls", "multilayer"])
@pytest.mark.parametrize("family", ["minilm", "roberta"])
def test_trunk_prefixes_equal_the_layers_written_out(
    family: str, pooling: str, minilm: Backbone, roberta: Backbone
) -> None:
    backbone = minilm if family == "minilm" else roberta
    encoder = TorchEncoder(backbone, pooling=pooling, pooling_layers=3, chunk_rows=0)
    prefixes = _mixed(backbone)
    bank = PrefixBank.build(prefixes)
    batch = encoder.tokenize(TEXTS, max_length=encoder.max_input_tokens, truncate=True)
    slots = list(range(len(bank)))
    got = encoder.encode(batch, bank, slots)
    assert {p.first_layer for p in bank.prefixes} >= {0, backbone.spec.num_layers - 1}
    worst = 0.0
    for b, text in enumerate(TEXTS):
        ids = token_ids(encoder, text)
        for j, p in enumerate(bank.prefixes):
            ref = reference(backbone, ids, None if p.builtin else p, pooling, pooling_layers=3)
            worst = max(worst, float(np.abs(got[b, j] - ref).max()))
    assert worst <= TOL
    # the prefixes matter: a trunk prefix's vector differs from the plain backbone's
    plain = base_vectors(encoder, batch)
    deep = bank.indices([n for n in bank.names if n.startswith("trunk")])[-1]
    assert np.abs(got[:, deep] - plain).max() > 1e-3
    np.testing.assert_allclose(got[:, bank.indices([BASE_NAME])[0]], plain, atol=TOL, rtol=0)


@pytest.mark.parametrize(("group_by_depth", "chunk_rows"), [(True, 0), (False, 0), (True, 7), (False, 5)])
def test_mixed_depths_in_one_batch_equal_each_alone(
    minilm: Backbone, group_by_depth: bool, chunk_rows: int
) -> None:
    prefixes = _mixed(minilm)
    encoder = TorchEncoder(minilm, chunk_rows=chunk_rows, group_by_depth=group_by_depth)
    bank = PrefixBank.build(prefixes)
    batch = encoder.tokenize(TEXTS, max_length=128, truncate=True)
    together = encoder.encode(batch, bank, list(range(len(bank))))
    for j, p in enumerate(bank.prefixes):
        alone = TorchEncoder(minilm, chunk_rows=0).encode(batch, PrefixBank.build([p]), [0])[:, 0]
        np.testing.assert_allclose(together[:, j], alone, atol=TOL, rtol=0, err_msg=p.name)
    # requested order, repeats and a subset are honoured
    order = [4, 0, 4, 2]
    np.testing.assert_allclose(encoder.encode(batch, bank, order), together[:, order], atol=TOL, rtol=0)


def test_trunk_runs_once_per_text(minilm: Backbone) -> None:
    """Rows entering each layer (forward hooks): B below S, B x P from S up; the observer's layer
    rows (the metric's source) equal the hooks' count."""
    layers, s, n_prefixes = minilm.spec.num_layers, 4, 5
    bank = PrefixBank.build([trunk_prefix(minilm.spec, f"t{i}", s, 3 + i, seed=i) for i in range(n_prefixes)])
    encoder = TorchEncoder(minilm, chunk_rows=0)
    seen: dict[int, list[int]] = {i: [] for i in range(layers)}
    handles = [
        minilm.model.encoder.layer[i].register_forward_hook(  # type: ignore[index,union-attr]
            lambda mod, args, out, i=i: seen[i].append(int(args[0].shape[0]))
        )
        for i in range(layers)
    ]
    calls: list[ForwardCall] = []
    encoder.set_observer(calls.append)
    batch = encoder.tokenize(TEXTS, max_length=128, truncate=True)
    try:
        encoder.encode(batch, bank, list(range(n_prefixes)))
    finally:
        for h in handles:
            h.remove()
    b = len(TEXTS)
    assert [seen[i] for i in range(s)] == [[b]] * s
    assert [seen[i] for i in range(s, layers)] == [[b * n_prefixes]] * (layers - s)
    assert len(calls) == 1
    assert calls[0].fan_out == s
    assert calls[0].texts == b
    assert (
        calls[0].layer_rows == sum(sum(v) for v in seen.values()) == layer_rows(layers, s, b, b * n_prefixes)
    )


def test_layer_rows_metric_counts_the_trunk_once(minilm: Backbone) -> None:
    from service.batching.batcher import Batcher  # noqa: F401 - the metrics observe a batcher's events

    registry = CollectorRegistry()

    class _NoBatcher:
        queue_depth = 0

    metrics = PrometheusBatcherMetrics(_NoBatcher(), registry)  # type: ignore[arg-type]
    encoder = TorchEncoder(minilm, chunk_rows=0)
    encoder.set_observer(metrics.on_forward)
    bank = PrefixBank.build([trunk_prefix(minilm.spec, f"t{i}", 3, 4, seed=i) for i in range(3)])
    batch = encoder.tokenize(TEXTS, max_length=128, truncate=True)
    encoder.encode(batch, bank, [0, 1, 2])
    b, layers = len(TEXTS), minilm.spec.num_layers
    assert registry.get_sample_value("prefix_embed_layer_rows_total") == 3 * b + (layers - 3) * b * 3
    assert registry.get_sample_value("prefix_embed_batch_rows_total") == b * 3
