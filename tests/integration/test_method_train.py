"""Training a prefix end to end on a small real sample, and serving it: the engine reproduces PEFT."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from service.engine.backbone import Backbone, load_backbone
from service.engine.bank import PrefixBank
from service.engine.prefix import LoadedPrefix
from service.engine.torch_encoder import TorchEncoder
from service.method.data import load_table, split
from service.method.learners import PeftLearner
from service.method.prefix_io import load_prefixes, write_native
from service.method.prefix_model import build_prefix_model, load_prompt
from service.method.recipe import RECIPES
from service.method.train import TaskSplit, TrainResult, train_prefix
from service.registry.init_record import normal_prompt
from service.registry.native import FORMAT_VERSION
from tests.support.prefixes import base_vectors

DATA = Path(__file__).parent.parent / "data"
TEXTS = [
    "WINNER!! Claim your free prize now, text WIN to 80086",
    "ok see you at the station at 6",
    "Congratulations, you have been selected for a cash award. Call 0906 now",
    "sorry, I'll call later",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sms_split() -> TaskSplit:
    train, dev = split(load_table(DATA / "sms_spam_200.jsonl", name="sms-spam"), 0.3, seed=0)
    return TaskSplit(train, dev)


@pytest.fixture(scope="module")
def trained(minilm_path: Path, sms_split: TaskSplit) -> TrainResult:
    cfg = replace(
        RECIPES["peft"],
        prefix_len=4,
        max_length=40,
        batch_size=16,
        max_steps=8,
        eval_every=4,
        checkpoint_steps=(2,),
    )
    return train_prefix(minilm_path, [sms_split], cfg, progress=False, threads=2)


def _peft(result: TrainResult) -> PeftLearner:
    assert isinstance(result.learner, PeftLearner)
    return result.learner


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, trained: TrainResult, minilm: Backbone) -> LoadedPrefix:
    path = tmp_path_factory.mktemp("prefixes") / "sms-spam.safetensors"
    write_native(path, trained.key, trained.value, trained.metadata, minilm.spec)
    return load_prefixes([path], minilm.spec)[0]


def test_dev_accuracy_beats_majority(trained: TrainResult) -> None:
    dev = trained.metadata["dev_metrics"]
    assert dev["n_dev"] >= 50
    assert dev["majority_accuracy"] <= 0.56
    assert dev["accuracy"] > dev["majority_accuracy"] + 0.2
    assert trained.metadata["training"]["steps_run"] == 8
    assert set(trained.checkpoints) == {2}
    assert [h["step"] for h in trained.history] == [0, 4, 8]  # step 0: the head's probe fit
    spec = trained.learner.spec
    start = normal_prompt(spec.num_layers, spec.hidden_size, 4, 0, 0.5)
    moved = trained.checkpoints[2][0] - start.view(4, spec.num_layers, 2, spec.num_heads, -1)[
        :, :, 0
    ].permute(1, 2, 0, 3)
    assert 0 < moved.abs().max() < 0.1  # two Adam steps of lr 1e-2 moved the prefix, a little


def test_written_file_round_trips_metadata(
    written: LoadedPrefix, trained: TrainResult, minilm: Backbone
) -> None:
    meta = written.metadata
    assert meta["format"] == FORMAT_VERSION
    assert meta["task"] == "sms-spam"
    assert meta["labels"] == ["ham", "spam"]
    assert meta["dev_metrics"] == trained.metadata["dev_metrics"]
    assert meta["backbone_fingerprint"] == minilm.spec.fingerprint
    assert meta["position_convention"] == "peft"
    assert written.position_shift == 4
    assert meta["pooling"] == "mean"
    assert meta["init"] == {"method": "normal", "seed": 0, "std": 0.5}
    assert meta["training"]["prefix_len"] == 4
    assert meta["training"]["versions"]["peft"]
    assert meta["data"]["sha256"]
    assert meta["data"]["n_train"] + meta["data"]["n_dev"] == 200
    assert written.key.shape == (minilm.spec.num_layers, minilm.spec.num_heads, 4, minilm.spec.head_dim)
    assert torch.equal(written.key, trained.key)
    assert torch.equal(written.value, trained.value)


def test_engine_reproduces_the_peft_model(
    written: LoadedPrefix, trained: TrainResult, minilm: Backbone
) -> None:
    """The served vector of the trained prefix equals PEFT's pooled output on the same texts."""
    encoder = TorchEncoder(minilm, pooling="mean")
    other = LoadedPrefix("other", "0" * 64, written.key * 0.5, written.value, "peft", "x", "native")
    bank = PrefixBank.build([other, written])
    batch = encoder.tokenize(TEXTS, max_length=64, truncate=True)
    served = encoder.encode(batch, bank, bank.indices([written.name]))[:, 0]
    with torch.no_grad():
        model = _peft(trained).model
        ref = model.pooled(model.tokenize(TEXTS, None, 64)).numpy()
    assert np.abs(served - ref).max() <= 1e-5
    assert np.abs(served - base_vectors(encoder, batch)).max() > 1e-2  # the prefix changes the vector


def test_projection_prefix_is_exported_as_the_projected_kv(
    tiny_bert_path: Path, sms_split: TaskSplit
) -> None:
    """With prefix_projection the file holds the MLP's output; the engine reproduces PEFT with it."""
    tiny = load_backbone(tiny_bert_path, device="cpu", dtype="float32")
    cfg = replace(
        RECIPES["peft"], prefix_len=3, max_length=24, max_steps=3, eval_every=3, projection=True, head_lr=1e-2
    )
    small = TaskSplit(sms_split.train.take(range(40)), sms_split.dev.take(range(20)))
    result = train_prefix(tiny_bert_path, [small], cfg, progress=False)
    assert result.metadata["init"] == {"method": "projection", "seed": 0, "std": 0.5}
    prefix = LoadedPrefix("proj", "1" * 64, result.key, result.value, "peft", "x", "native")
    encoder = TorchEncoder(tiny, pooling="mean")
    batch = encoder.tokenize(TEXTS, max_length=24, truncate=True)
    served = encoder.encode(batch, PrefixBank.build([prefix]), [0])[:, 0]
    with torch.no_grad():
        model = _peft(result).model
        ref = model.pooled(model.tokenize(TEXTS, None, 24)).numpy()
    assert np.abs(served - ref).max() <= 1e-5


def test_load_prompt_inverts_the_export(tiny_bert_path: Path) -> None:
    model = build_prefix_model(tiny_bert_path, 5, seed=7, init_std=0.3)
    key, value = model.key_value()
    start = normal_prompt(model.spec.num_layers, model.spec.hidden_size, 5, 7, 0.3)
    assert torch.equal(model.prompt_weight(), start)
    other = build_prefix_model(tiny_bert_path, 5, seed=8)
    load_prompt(other, key, value)
    assert torch.equal(other.prompt_weight(), start)


def test_text_pairs_train_and_tokenize_as_one_sequence(tiny_bert_path: Path, tmp_path: Path) -> None:
    """A pair is [CLS] a [SEP] b [SEP] without token type ids (PEFT drops them; the engine has none)."""
    rows = [
        {"text": f"is {w} a colour", "text_pair": ans, "label": "yes" if ans == "yes" else "no"}
        for w in ("red", "blue", "green", "table", "chair", "river")
        for ans in ("yes", "no")
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_table(path)
    assert data.pairs is not None
    model = build_prefix_model(tiny_bert_path, 2)
    enc = model.tokenize(data.texts[:1], data.pairs[:1], 32)
    assert "token_type_ids" not in enc
    sep = model.tokenizer.sep_token_id
    assert enc["input_ids"][0].tolist().count(sep) == 2
    train, dev = split(data, 0.25, seed=0)
    cfg = replace(RECIPES["peft"], prefix_len=2, max_length=24, max_steps=2, eval_every=2)
    result = train_prefix(tiny_bert_path, [TaskSplit(train, dev)], cfg, progress=False)
    assert result.metadata["labels"] == ["no", "yes"]
    assert result.metadata["dev_metrics"]["n_dev"] == len(dev)
