"""BERT-like families: attention through transformers' pluggable attention interface.

The model is switched to the registered prefix attention (``service/engine/attention.py``); the bank
and each row's slot reach it as keyword arguments of the layer call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from service.engine.arch.base import Architecture, LayerPrefix
from service.engine.attention import ensure_prefix_attention, install_prefix_attention

# Families whose position ids start after the padding index (RoBERTa's convention).
PADDING_OFFSET_FAMILIES = frozenset({"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"})


class BertFamily(Architecture):
    name = "attention-interface"
    model_types = frozenset({"bert", *PADDING_OFFSET_FAMILIES})

    def position_offset(self, model_type: str, pad_token_id: int) -> int:
        return pad_token_id + 1 if model_type in PADDING_OFFSET_FAMILIES else 0

    def install(self, model: nn.Module) -> None:
        Architecture.ensure(self, model)
        install_prefix_attention(model)  # type: ignore[arg-type]

    def ensure(self, model: nn.Module) -> None:
        super().ensure(model)
        ensure_prefix_attention(model)  # type: ignore[arg-type]

    def layer(
        self,
        model: nn.Module,
        i: int,
        hidden: torch.Tensor,
        key_mask: torch.Tensor,
        state: Any,
        prefix: LayerPrefix | None,
    ) -> torch.Tensor:
        layer: Any = model.encoder.layer[i]  # type: ignore[index,union-attr]
        if prefix is None:
            return layer(hidden, None, key_mask=key_mask)
        return layer(
            hidden,
            None,
            key_mask=key_mask,
            prefix_keys=prefix.keys,
            prefix_values=prefix.values,
            prefix_index=prefix.index,
        )

    def kv_projections(self, model: nn.Module, i: int) -> tuple[nn.Module, nn.Module]:
        attn: Any = model.encoder.layer[i].attention.self  # type: ignore[index,union-attr]
        return attn.key, attn.value
