"""The one batched forward: (text, prefix) rows through the frozen backbone, pooled.

Shared-trunk prefixes: a prefix with ``first_layer`` = S adds keys/values only in layers S..L-1 and
leaves text positions unshifted, so layers 0..S-1 of a text do not depend on it. A call with
fan-out depth F (the smallest S among its prefixes) runs the embeddings and layers 0..F-1 ONCE per
text (B rows, the trunk), then gathers the rows out to one per (text, prefix) pair for layers
F..L-1. F = 0 is the classic path: every row runs every layer.

The layers are driven here (embeddings, then each layer) instead of through ``model(...)``, which
cannot change its row count between layers. How one layer takes the prefix is the model family's
architecture adapter (``service/engine/arch/``: BERT-like models through the registered attention
implementation, MPNet through its own attention with a relative position bias); the per-layer key
mask hides a row's prefix slots in layers below its prefix's ``first_layer``.
"""

from __future__ import annotations

import torch
from torch import nn

from service.engine.arch import LayerPrefix, architecture_for
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


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[rows, keys] bool (True = attend) -> [rows, 1, 1, keys] float, 0 or -inf, added to the scores.

    Built once per layer (not inside each attention call). A float mask also exports to plain
    Add + Softmax, where a bool one exports to Where plus a NaN guard (IsNaN + Where) in every layer;
    every row keeps at least one text key, so no row is all -inf."""
    zeros = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
    return zeros.masked_fill(~keep, float("-inf"))[:, None, None, :]


def layer_rows(num_layers: int, fan_out: int, texts: int, rows: int) -> int:
    """Rows computed summed over layers: the trunk on ``texts`` rows, the rest on ``rows``."""
    return fan_out * texts + (num_layers - fan_out) * rows


class PrefixedForward(nn.Module):
    """``forward(input_ids, attention_mask, prefix_index, prefix_keys, prefix_values, prefix_lengths,
    prefix_shift, prefix_first=None, row_text=None, fan_out=0) -> [rows, hidden]``.

    The prefix bank is an INPUT (``prefix_keys``/``prefix_values`` [P, layers, heads, Lp, head_dim]
    with zeros in the layers a prefix does not act in, ``prefix_lengths``/``prefix_shift``/
    ``prefix_first`` [P]); row r uses prefix ``prefix_index[r]``. So a new prefix needs no new
    module and no ONNX re-export. ``prefix_keys=None`` runs the plain backbone.

    Rows and texts: ``input_ids``/``attention_mask`` hold the texts [B, T]; ``row_text`` [R] names
    the text of each row (None: rows are the texts, R = B). ``fan_out`` (a Python int: it shapes the
    control flow, so an exported graph has it fixed) is where rows fan out from texts; it must not
    exceed any row's ``first_layer``, and rows must be unshifted when it is above 0.
    """

    def __init__(self, model: nn.Module, spec: BackboneSpec, pooling: str = "mean", pooling_layers: int = 4):
        super().__init__()
        self.model = model
        self.spec = spec
        self.arch = architecture_for(spec.model_type)
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
        prefix_first: torch.Tensor | None = None,
        row_text: torch.Tensor | None = None,
        fan_out: int = 0,
    ) -> torch.Tensor:
        self.arch.ensure(self.model)
        if prefix_keys is None:
            return self._plain(input_ids, attention_mask)
        if prefix_values is None or prefix_index is None or prefix_lengths is None or prefix_shift is None:
            raise ValueError("prefix_keys needs prefix_values, prefix_index, prefix_lengths and prefix_shift")
        num_layers = self.spec.num_layers
        if not 0 <= fan_out < num_layers:
            raise ValueError(f"fan_out {fan_out} outside 0..{num_layers - 1}")
        dev = input_ids.device
        if prefix_first is None:
            prefix_first = torch.zeros_like(prefix_lengths)
        row_first = prefix_first[prefix_index]  # [R]
        lp = prefix_keys.shape[3]
        prefix_valid = torch.arange(lp, device=dev).unsqueeze(0) < prefix_lengths[prefix_index].unsqueeze(1)

        if fan_out == 0 and row_text is not None:
            # Every layer per row: fan out before the embeddings (rows may shift positions).
            input_ids, attention_mask = input_ids[row_text], attention_mask[row_text]
            row_text = None
        text_mask = attention_mask.bool()
        shift = prefix_shift[prefix_index] if fan_out == 0 else torch.zeros_like(row_first)
        if fan_out == 0:
            hidden = self._embed(input_ids, attention_mask, shift)
        else:
            hidden = self._embed(input_ids, attention_mask, torch.zeros_like(input_ids[:, 0]))
        states = [hidden]
        state = self.arch.call_state(self.model, hidden, lp)
        trunk_mask = additive_mask(text_mask, hidden.dtype)
        for i in range(fan_out):  # the trunk: once per text, no prefix
            hidden = self.arch.layer(self.model, i, hidden, trunk_mask, state, None)
            states.append(hidden)
        if row_text is not None:
            hidden = hidden[row_text]
            text_mask = text_mask[row_text]
            attention_mask = attention_mask[row_text]
        bank = LayerPrefix(prefix_keys, prefix_values, prefix_index)
        for i in range(fan_out, num_layers):
            active = prefix_valid & (row_first <= i).unsqueeze(1)
            key_mask = additive_mask(torch.cat([active, text_mask], dim=1), hidden.dtype)
            hidden = self.arch.layer(self.model, i, hidden, key_mask, state, bank)
            states.append(hidden)
        # pooling reads the last state (mean, cls) or the last k (multilayer): only those trunk states
        # below the fan-out are gathered out to the rows
        used = states[-self.pooling_layers :] if self.pooling == "multilayer" else states[-1:]
        if row_text is not None:
            first_used = len(states) - len(used)
            used = [s[row_text] if first_used + j <= fan_out else s for j, s in enumerate(used)]
        return pool(self.pooling, used, attention_mask, self.pooling_layers).float()

    def _plain(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self._embed(input_ids, attention_mask, torch.zeros_like(input_ids[:, 0]))
        states = [hidden]
        state = self.arch.call_state(self.model, hidden, 0)
        mask = additive_mask(attention_mask.bool(), hidden.dtype)
        for i in range(self.spec.num_layers):
            hidden = self.arch.layer(self.model, i, hidden, mask, state, None)
            states.append(hidden)
        return pool(self.pooling, states, attention_mask, self.pooling_layers).float()

    def _embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, shift: torch.Tensor
    ) -> torch.Tensor:
        position_ids = text_position_ids(attention_mask, shift, self.spec)
        return self.arch.embed(self.model, input_ids, position_ids)
