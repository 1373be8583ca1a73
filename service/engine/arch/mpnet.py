"""MPNet (e.g. all-mpnet-base-v2): prefix attention next to a relative position bias.

transformers' MPNet computes attention inside its own module (``MPNetSelfAttention``: scores + a
relative position bias shared by all layers + the mask), not through the pluggable attention
interface, and its layers drop unknown keyword arguments: a bank passed to them would be silently
ignored. So this adapter runs each layer from the module's own parts (q/k/v/o projections, layer
norms, feed-forward), with the prefix keys/values in front of the text's, exactly as the stock
layer computes everything else.

**The prefix slots' position bias is zero.** A prefix slot has no position: in every layer and head,
every query scores it as ``q . k_prefix / sqrt(head_dim)`` with no bias; the text keys keep MPNet's
relative bias between text positions (``relative_attention_bias`` of the bucketed distance, the
same table as the stock model). Text positions (absolute position embeddings) are unshifted by a
``position_convention: none`` prefix, as for every shared-trunk prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from service.engine.arch.base import Architecture, LayerPrefix

# MPNetEmbeddings fixes its padding index at 1 whatever the config says; positions start after it.
PADDING_IDX = 1


@dataclass(frozen=True)
class PositionBias:
    """MPNet's relative position bias of one call: [1, heads, T, T] over text keys, and the same
    with Lp zero columns in front for the prefix slots ([1, heads, T, Lp + T])."""

    text: torch.Tensor
    prefixed: torch.Tensor


class MPNetFamily(Architecture):
    name = "mpnet"
    model_types = frozenset({"mpnet"})

    def position_offset(self, model_type: str, pad_token_id: int) -> int:
        return PADDING_IDX + 1

    def ensure(self, model: nn.Module) -> None:
        super().ensure(model)
        encoder: Any = getattr(model, "encoder", None)
        if encoder is None or not hasattr(encoder, "relative_attention_bias"):
            raise RuntimeError(
                "MPNet model without encoder.relative_attention_bias: not the layout this adapter runs"
            )
        for i, layer in enumerate(encoder.layer):
            attn = getattr(getattr(layer, "attention", None), "attn", None)
            parts = ("q", "k", "v", "o")
            if attn is None or not all(isinstance(getattr(attn, p, None), nn.Linear) for p in parts):
                raise RuntimeError(
                    f"MPNet layer {i} has no attention.attn.{{q,k,v,o}} projections: "
                    "not the layout this adapter runs, prefixes cannot be applied"
                )

    def call_state(self, model: nn.Module, hidden: torch.Tensor, prefix_len: int) -> PositionBias:
        encoder: Any = model.encoder
        # the stock model's own bias (MPNetEncoder.forward calls it the same way), for one row: it
        # depends only on the positions, so it broadcasts over the rows
        text = encoder.compute_position_bias(hidden[:1])
        zeros = text.new_zeros((1, text.shape[1], text.shape[2], prefix_len))
        return PositionBias(text, torch.cat([zeros, text], dim=-1))

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
        attention = layer.attention
        attn = attention.attn
        rows, t, _ = hidden.shape
        heads, head_dim = attn.num_attention_heads, attn.attention_head_size
        shape = (rows, t, heads, head_dim)
        q = attn.q(hidden).view(shape).transpose(1, 2)
        k = attn.k(hidden).view(shape).transpose(1, 2)
        v = attn.v(hidden).view(shape).transpose(1, 2)
        bias = state.text
        if prefix is not None:
            pk, pv = prefix.layer_kv(i)
            k = torch.cat([pk, k], dim=2)
            v = torch.cat([pv, v], dim=2)
            bias = state.prefixed
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim)
        probs = attn.dropout(torch.softmax(scores + bias + key_mask, dim=-1))
        context = torch.matmul(probs, v).transpose(1, 2).reshape(rows, t, heads * head_dim)
        out = attention.LayerNorm(attention.dropout(attn.o(context)) + hidden)
        return layer.output(layer.intermediate(out), out)

    def kv_projections(self, model: nn.Module, i: int) -> tuple[nn.Module, nn.Module]:
        attn: Any = model.encoder.layer[i].attention.attn  # type: ignore[index,union-attr]
        return attn.k, attn.v
