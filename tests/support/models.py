"""Tiny random-weight backbones saved as model folders (real architecture, no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from service.config import Settings


def save_tiny(
    folder: Path, family: Literal["bert", "roberta", "mpnet"], tokenizer_from: Path, *, layers: int = 2
) -> Path:
    """A ``layers``-layer (default 2; MPNet: always 3), hidden-32, 4-head ``family`` model with seeded
    random weights and the tokenizer of ``tokenizer_from``, saved to ``folder`` (a BERT takes 64
    positions; a RoBERTa and an MPNet 64 after their offset)."""
    from transformers import AutoTokenizer, BertConfig, BertModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    common: dict[str, Any] = dict(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if family == "mpnet":
        model_folder = _tiny_mpnet(common)
        model_folder.save_pretrained(folder)
        tok.save_pretrained(folder)
        return folder
    model: BertModel | RobertaModel
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


def _tiny_mpnet(common: dict[str, Any]) -> Any:
    """3 layers (so prefixes can start at 0, 1 or 2), 66 positions (64 after MPNet's offset of 2), and
    a relative position bias drawn at N(0, 1) instead of the initializer's N(0, 0.02^2), so that the
    bias visibly shapes attention and a test can tell whether it is applied."""
    from transformers import MPNetConfig, MPNetModel

    config = MPNetConfig(**{**common, "num_hidden_layers": 3}, max_position_embeddings=66)
    model = MPNetModel(config, add_pooling_layer=False)
    with torch.no_grad():
        bias = model.encoder.relative_attention_bias.weight
        bias.copy_(torch.randn(bias.shape, generator=torch.Generator().manual_seed(1)))
    return model


def onnx_settings(model: Path, cache: Path, **extra: Any) -> Settings:
    """Settings of the ONNX backend on CPU, float32, exporting into ``cache``."""
    return Settings(model=model, backend="onnx", device="cpu", dtype="float32", onnx_cache_dir=cache, **extra)
