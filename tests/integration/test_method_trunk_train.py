"""Training a shared-trunk prefix (``train --first-layer S``) on the tiny random BERT: file format,
a trunk without gradients, the served vector, and the recipe options (init, projection, preservation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from service.cli import app
from service.engine.backbone import Backbone, load_backbone
from service.engine.bank import PrefixBank
from service.engine.forward import PrefixedForward
from service.engine.prefix import LoadedPrefix
from service.engine.torch_encoder import TorchEncoder
from service.method.data import TaskData, load_table, split
from service.method.init import token_kv
from service.method.learners import TrunkPrefix
from service.method.loop import lr_factor, preservation_loss
from service.method.prefix_io import load_prefixes, write_native
from service.method.recipe import TrainConfig
from service.method.train import TaskSplit, train_prefix
from service.method.trunk import build_trunk_cache, pooled_all, top_pooled

DATA = Path(__file__).parent.parent / "data"
TEXTS = ["free prize, text WIN now", "see you at six", "call 0906 for your cash award today", "ok"]


@pytest.fixture(scope="module")
def tiny(tiny_bert_path: Path) -> Backbone:
    return load_backbone(tiny_bert_path, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def sms() -> tuple[TaskData, TaskData]:
    train, dev = split(load_table(DATA / "sms_spam_200.jsonl", name="sms-spam"), 0.3, seed=0)
    return train.take(range(60)), dev.take(range(30))


def _kv(tiny: Backbone, first: int, lp: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    s = tiny.spec
    g = torch.Generator().manual_seed(seed)
    shape = (s.num_layers - first, s.num_heads, lp, s.head_dim)
    return torch.randn(shape, generator=g) * 0.5, torch.randn(shape, generator=g) * 0.5


@pytest.mark.parametrize("first", [0, 1])
def test_cached_trunk_vectors_equal_the_engine_forward(tiny: Backbone, first: int) -> None:
    """top_pooled over cached trunk states == PrefixedForward (the served path) with fan_out = S."""
    key, value = _kv(tiny, first)
    cache = build_trunk_cache(tiny, TEXTS, None, [first], max_length=16)
    ours = pooled_all(tiny, cache, first, key, value)
    s = tiny.spec
    pad = torch.zeros(first, *key.shape[1:])
    enc = tiny.tokenizer(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        ref = PrefixedForward(tiny.model, s, "mean")(
            enc["input_ids"],
            enc["attention_mask"],
            prefix_index=torch.zeros(len(TEXTS), dtype=torch.long),
            prefix_keys=torch.cat([pad, key])[None],
            prefix_values=torch.cat([pad, value])[None],
            prefix_lengths=torch.tensor([key.shape[2]]),
            prefix_shift=torch.tensor([0]),
            prefix_first=torch.tensor([first]),
            fan_out=first,
        )
        plain = PrefixedForward(tiny.model, s, "mean")(enc["input_ids"], enc["attention_mask"])
    assert (ours - ref).abs().max() <= 1e-5
    assert (cache.base - plain).abs().max() <= 1e-5  # the cached base vector is the plain backbone's
    assert (ours - plain).abs().max() > 1e-3  # the prefix matters


def test_trained_file_records_depth_and_the_trunk_gets_no_gradient(
    tiny: Backbone, sms: tuple[TaskData, TaskData], tmp_path: Path
) -> None:
    train, dev = sms
    cfg = TrainConfig(
        first_layer=1, prefix_len=3, max_length=24, max_steps=4, eval_every=2, lr=5e-2, schedule="constant"
    )
    train_cache = build_trunk_cache(tiny, train.texts, None, [1], 24)
    dev_cache = build_trunk_cache(tiny, dev.texts, None, [1], 24)
    calls = {"trunk": 0, "top": 0}
    hooks = [
        _layers(tiny)[0].register_forward_hook(lambda *_: calls.__setitem__("trunk", calls["trunk"] + 1)),
        _layers(tiny)[1].register_forward_hook(lambda *_: calls.__setitem__("top", calls["top"] + 1)),
    ]
    try:
        caches = {train.digest(): train_cache, dev.digest(): dev_cache}
        result = train_prefix(tiny, [TaskSplit(train, dev)], cfg, caches=caches, progress=False)
    finally:
        for h in hooks:
            h.remove()
    assert calls["trunk"] == 0
    assert calls["top"] > 4
    assert all(p.grad is None for p in tiny.model.parameters())
    s = tiny.spec
    assert result.key.shape == (s.num_layers - 1, s.num_heads, 3, s.head_dim)
    assert [h["step"] for h in result.history] == [0, 2, 4]
    path = tmp_path / "sms-spam.safetensors"
    write_native(path, result.key, result.value, result.metadata, s)
    (loaded,) = load_prefixes([tmp_path], s)  # a folder, as the commands read prefixes/
    assert loaded.first_layer == 1
    assert loaded.metadata["first_layer"] == "1"
    assert loaded.position_convention == "none"
    assert loaded.position_shift == 0
    assert loaded.key.shape == result.key.shape
    assert torch.equal(loaded.value, result.value)
    assert loaded.metadata["recipe"] == "S=1 init=normal preserve=0 schedule=constant"


def test_the_kept_head_reads_the_served_vector(tiny: Backbone, sms: tuple[TaskData, TaskData]) -> None:
    """The head a run keeps, applied to the engine's vector of the written prefix (mean pooled, not
    normalized, texts cut to max_length), gives the run's recorded dev accuracy; ``encode`` gives
    those vectors."""
    train, dev = sms
    cfg = TrainConfig(first_layer=1, prefix_len=3, max_length=24, max_steps=4, eval_every=2, lr=5e-2)
    result = train_prefix(tiny, [TaskSplit(train, dev)], cfg, progress=False)
    head = result.head
    assert head.labels == ["ham", "spam"]
    assert head.weight.shape == (2, tiny.spec.hidden_size)
    assert (head.normalize, head.pooling, head.max_length) == (False, "mean", 24)
    prefix = LoadedPrefix("p", "0" * 64, result.key, result.value, "none", "p", "native", {}, first_layer=1)
    encoder = TorchEncoder(tiny, pooling="mean")
    served = encoder.encode(
        encoder.tokenize(dev.texts, max_length=24, truncate=True), PrefixBank.build([prefix]), [0]
    )
    assert np.abs(served[:, 0] - result.encode(dev)[0]).max() <= 1e-5
    pred = np.array(head.labels)[(served[:, 0] @ head.weight.T + head.bias).argmax(1)]
    assert (pred == np.array(dev.labels)).mean() == pytest.approx(result.metadata["dev_metrics"]["accuracy"])


def test_token_init_starts_closer_to_base_than_the_random_draw(tiny: Backbone) -> None:
    cache = build_trunk_cache(tiny, TEXTS, None, [0], max_length=16)
    kt, vt = token_kv(tiny, 0, 4, seed=0)
    kr, vr = _kv(tiny, 0, lp=4)

    def dist(k: torch.Tensor, v: torch.Tensor) -> float:
        pooled = pooled_all(tiny, cache, 0, k, v)
        return float(preservation_loss(pooled, cache.base))

    assert dist(kt, vt) < dist(kr, vr)
    # the token K/V are the layer's own projections of real token states
    attn = _layers(tiny)[1].attention.self
    assert kt.shape == kr.shape
    assert not torch.allclose(kt[1], attn.key.bias.view(tiny.spec.num_heads, 1, -1).expand_as(kt[1]))


def test_preservation_gradient_reaches_only_the_prefix(tiny: Backbone) -> None:
    cfg = TrainConfig(first_layer=1, prefix_len=3)
    prefix = TrunkPrefix(tiny, cfg)
    head = torch.nn.Linear(tiny.spec.hidden_size, 2)
    cache = build_trunk_cache(tiny, TEXTS, None, [1], max_length=16)
    hidden, mask = cache.batch(1, range(len(TEXTS)))
    hidden.requires_grad_(True)
    base = cache.base.clone().requires_grad_(True)
    key, value = prefix.kv()
    pooled = top_pooled(tiny, hidden, mask, 1, key, value)
    head(pooled)  # the head is in the graph but not in this term
    preservation_loss(pooled, base).backward()
    assert prefix.key.grad is not None
    assert prefix.key.grad.abs().sum() > 0
    assert prefix.value.grad is not None
    assert prefix.value.grad.abs().sum() > 0
    assert head.weight.grad is None
    assert base.grad is None
    assert all(p.grad is None for p in tiny.model.parameters())
    # the trunk states are inputs: the cached tensors themselves are never modified or trained
    assert not any(s.requires_grad for s in cache.states[1])


def test_projection_and_schedule(tiny: Backbone) -> None:
    prefix = TrunkPrefix(tiny, TrainConfig(first_layer=1, prefix_len=3, projection=True, projection_hidden=8))
    key, value = prefix.kv()
    s = tiny.spec
    assert key.shape == value.shape == (s.num_layers - 1, s.num_heads, 3, s.head_dim)
    key.sum().backward()
    assert prefix.table.grad is not None
    assert prefix.table.grad.abs().sum() > 0
    f = lr_factor("cosine", 100)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(100) == pytest.approx(0.0)
    assert lr_factor("constant", 100)(50) == 1.0
    with pytest.raises(ValueError, match="init"):
        TrainConfig(init="zeros")


def test_cli_train_first_layer(tiny_bert_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "sms.safetensors"
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(DATA / "sms_spam_200.jsonl"), "--out", str(out), "--model", str(tiny_bert_path),
         "--first-layer", "1", "--prefix-len", "2", "--max-length", "16", "--max-steps", "2", "--eval-every", "2",
         "--max-examples", "60", "--init", "tokens", "--preserve", "0.5", "--schedule", "cosine", "--no-progress",
         "--no-calibrate"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["first_layer"] == 1
    assert summary["steps"] == 2
    assert summary["recipe"] == "S=1 init=tokens preserve=0.5 schedule=cosine"
    bad = CliRunner().invoke(
        app, ["train", "--data", str(DATA / "sms_spam_200.jsonl"), "--out", str(out), "--model", str(tiny_bert_path),
              "--first-layer", "5", "--max-steps", "1"],
    )  # fmt: skip
    assert bad.exit_code != 0
    assert "outside 0..1" in bad.output


def _layers(backbone: Backbone) -> Any:
    return backbone.model.encoder.layer  # type: ignore[union-attr]


def test_similarity_measures_a_trunk_prefix_from_its_recorded_start(tiny: Backbone) -> None:
    from service.engine.prefix import LoadedPrefix
    from service.registry.similarity import task_embedding

    s = tiny.spec
    start = TrunkPrefix(tiny, TrainConfig(first_layer=1, prefix_len=3, seed=7))
    delta_k, delta_v = _kv(tiny, 1, lp=3, seed=1)
    meta = {"init": {"method": "normal-kv", "seed": 7, "std": 0.5}, "first_layer": "1"}
    key, value = start.key.detach() + delta_k, start.value.detach() + delta_v
    trained = LoadedPrefix("t", "0" * 64, key, value, "none", "t", "native", meta, first_layer=1)
    moved = LoadedPrefix("d", "0" * 64, delta_k, delta_v, "none", "d", "native", {}, first_layer=1)
    assert key.shape[0] == s.num_layers - 1
    assert abs(float(task_embedding(trained) @ task_embedding(moved)) - 1.0) < 1e-9
