"""Tiny random-weight backbones saved as model folders (real architecture, no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch


def save_tiny(
    folder: Path, family: Literal["bert", "roberta"], tokenizer_from: Path, *, layers: int = 2
) -> Path:
    """A ``layers``-layer (default 2), hidden-32, 4-head ``family`` model with seeded random weights and the tokenizer of
    ``tokenizer_from``, saved to ``folder`` (a BERT takes 64 positions; a RoBERTa 64 after its offset)."""
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
