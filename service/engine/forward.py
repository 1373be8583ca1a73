"""The one batched forward: rows of (text, prefix) pairs through the frozen backbone, pooled."""

from __future__ import annotations

import torch
from torch import nn

from service.engine.attention import ensure_prefix_attention
from service.engine.backbone import BackboneSpec
from service.engine.pooling import pool


def text_position_ids(attention_mask: torch.Tensor, shift: torch.Tensor, spec: BackboneSpec) -> torch.Tensor:
    """Position ids per row: ``offset + shift + i`` for token i, where ``shift`` [R] is the row's
    prefix shift (PEFT's convention: the prefix length) and ``offset`` the family's first position.
    Padding gets the padding position (RoBERTa) or 0; it is masked anyway."""
    valid = attention_mask.to(torch.long)
    pos = (torch.cumsum(valid, dim=1) - 1).clamp(min=0) + shift.unsqueeze(1) + spec.position_offset
    pad_pos = spec.pad_token_id if spec.position_offset else 0
    return torch.where(valid.bool(), pos, torch.full_like(pos, pad_pos))


class PrefixedForward(nn.Module):
    """``forward(input_ids, attention_mask, prefix_index, prefix_keys, prefix_values, prefix_lengths,
    prefix_shift) -> [rows, hidden]``.

    The prefix bank is an INPUT (``prefix_keys``/``prefix_values`` [P, layers, heads, Lp, head_dim],
    ``prefix_lengths``/``prefix_shift`` [P]); row r uses prefix ``prefix_index[r]``. So a new prefix
    needs no new module and no ONNX re-export. ``prefix_keys=None`` runs the plain backbone.
    """

    def __init__(self, model: nn.Module, spec: BackboneSpec, pooling: str = "mean", pooling_layers: int = 4):
        super().__init__()
        self.model = model
        self.spec = spec
        self.pooling = pooling
        self.pooling_layers = pooling_layers

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prefix_index: torch.Tensor | None = None,
        prefix_keys: torch.Tensor | None = None,
        prefix_values: torch.Tensor | None = None,
        prefix_lengths: torch.Tensor | None = None,
        prefix_shift: torch.Tensor | None = None,
    ) -> torch.Tensor:
        ensure_prefix_attention(self.model)  # type: ignore[arg-type]
        text_mask = attention_mask.bool()
        extra: dict[str, torch.Tensor] = {}
        if prefix_keys is not None:
            if (
                prefix_values is None
                or prefix_index is None
                or prefix_lengths is None
                or prefix_shift is None
            ):
                raise ValueError(
                    "prefix_keys needs prefix_values, prefix_index, prefix_lengths and prefix_shift"
                )
            lp = prefix_keys.shape[3]
            slots = torch.arange(lp, device=input_ids.device)
            prefix_valid = slots.unsqueeze(0) < prefix_lengths[prefix_index].unsqueeze(1)  # [R, Lp]
            key_mask = torch.cat([prefix_valid, text_mask], dim=1)
            shift = prefix_shift[prefix_index]
            extra = {
                "prefix_keys": prefix_keys,
                "prefix_values": prefix_values,
                "prefix_index": prefix_index,
            }
        else:
            key_mask = text_mask
            shift = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=text_position_ids(attention_mask, shift, self.spec),
            output_hidden_states=self.pooling == "multilayer",
            key_mask=key_mask[:, None, None, :],
            **extra,
        )
        states = out.hidden_states if self.pooling == "multilayer" else (out.last_hidden_state,)
        return pool(self.pooling, states, attention_mask, self.pooling_layers).float()
