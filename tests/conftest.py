"""Shared fixtures: the default model, tiny random-weight BERT and RoBERTa folders, prefixes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests build the torch backend unless they ask for onnx: the default `auto` would export ONNX on
# the first start of every test server. The auto rule itself is tested in test_backend_choice.py.
os.environ.setdefault("PREFIX_EMBED_BACKEND", "torch")

from service.config import default_model_path  # noqa: E402
from service.engine.backbone import Backbone, BackboneSpec, load_backbone  # noqa: E402
from service.registry.writer import native_bytes  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        # the marker, not `"gpu" in item.keywords`: keywords also hold parametrize ids such as "gpu"
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def minilm(minilm_path: Path) -> Backbone:
    return load_backbone(minilm_path, device="cpu", dtype="float32")


def _save_tiny(folder: Path, family: str, minilm_path: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_path)
    common = dict(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if family == "roberta":
        # RoBERTa positions start after the padding index; 66 positions = 64 usable + offset.
        model = RobertaModel(
            RobertaConfig(
                **common, max_position_embeddings=66, pad_token_id=tok.pad_token_id, type_vocab_size=1
            ),
            add_pooling_layer=False,
        )
    else:
        model = BertModel(BertConfig(**common, max_position_embeddings=64), add_pooling_layer=False)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny-bert"), "bert", minilm_path)


@pytest.fixture(scope="session")
def tiny_roberta_path(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny-roberta"), "roberta", minilm_path)


@pytest.fixture(scope="session")
def tiny_bert(tiny_bert_path: Path) -> Backbone:
    return load_backbone(tiny_bert_path, device="cpu", dtype="float32")


def random_kv(
    spec: BackboneSpec, prefix_len: int, seed: int = 0, scale: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (spec.num_layers, spec.num_heads, prefix_len, spec.head_dim)
    return torch.randn(shape, generator=g) * scale, torch.randn(shape, generator=g) * scale


@pytest.fixture
def write_prefix() -> Callable[..., Path]:
    """write_prefix(folder, name, spec, prefix_len=4, seed=0, **metadata) -> path of a native prefix file."""

    def _write(
        folder: Path, name: str, spec: BackboneSpec, prefix_len: int = 4, seed: int = 0, **meta: object
    ) -> Path:
        key, value = random_kv(spec, prefix_len, seed)
        path = folder / f"{name}.safetensors"
        path.write_bytes(native_bytes(key, value, {"backbone_fingerprint": spec.fingerprint, **meta}))
        return path

    return _write
