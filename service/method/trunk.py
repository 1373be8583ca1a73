"""Shared-trunk training support: the frozen lower layers run ONCE per text, the top layers per prefix.

A prefix with ``first_layer`` = S acts only in layers S..L-1 and leaves text positions unshifted, so
the input of layer S does not depend on it. :func:`build_trunk_cache` runs the plain backbone over a
data set once, without gradients, and keeps each text's hidden states at the requested depths (the
embedding output for S = 0) and its ``base`` vector (the plain backbone, mean pooling, as served).
Training and evaluation then run only layers S..L-1 (:func:`top_pooled`), the same layer calls (the
backbone's architecture adapter) and key mask as the engine's
:class:`~service.engine.forward.PrefixedForward` with ``fan_out`` = S.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase

from service.engine.arch import LayerPrefix
from service.engine.backbone import Backbone
from service.engine.forward import additive_mask, text_position_ids
from service.engine.pooling import mean_pool


@dataclass
class TrunkCache:
    """Per text: hidden states entering layer S for each cached depth S, and the base vector."""

    states: dict[int, list[torch.Tensor]]  # S -> per text [tokens, hidden] (valid tokens only)
    base: torch.Tensor  # [N, hidden] plain backbone, mean pooled final layer

    def __len__(self) -> int:
        return int(self.base.shape[0])

    def rows(self, idx: Sequence[int]) -> TrunkCache:
        """The cache of texts ``idx`` only, in that order (every cached depth)."""
        states = {d: [per_text[i] for i in idx] for d, per_text in self.states.items()}
        return TrunkCache(states, self.base[torch.as_tensor(list(idx), dtype=torch.long)])

    def batch(self, depth: int, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden [B, T, hidden] right-padded, mask [B, T] bool) of texts ``idx`` at ``depth``."""
        rows = [self.states[depth][i] for i in idx]
        lengths = torch.tensor([r.shape[0] for r in rows])
        hidden = pad_sequence(rows, batch_first=True)
        mask = torch.arange(hidden.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        return hidden, mask


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int
) -> dict[str, torch.Tensor]:
    """Right-padded ids and mask, no token type ids (the engine passes none; PEFT drops them): a
    pair is ``[CLS] a [SEP] b [SEP]``."""
    args: tuple[Any, ...] = (list(texts),) if pairs is None else (list(texts), list(pairs))
    enc = tokenizer(
        *args,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@torch.no_grad()
def build_trunk_cache(
    backbone: Backbone,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    depths: Sequence[int],
    max_length: int,
    batch: int = 64,
) -> TrunkCache:
    """Run the plain backbone once over ``texts``; keep the states entering each layer in ``depths``."""
    arch = backbone.arch
    arch.ensure(backbone.model)
    spec = backbone.spec
    for s in depths:
        if not 0 <= s < spec.num_layers:
            raise ValueError(f"depth {s} outside 0..{spec.num_layers - 1}")
    states: dict[int, list[torch.Tensor]] = {s: [] for s in depths}
    base = []
    for start in range(0, len(texts), batch):
        chunk_pairs = pairs[start : start + batch] if pairs else None
        enc = tokenize(backbone.tokenizer, texts[start : start + batch], chunk_pairs, max_length)
        mask = enc["attention_mask"]
        lengths = mask.sum(1).tolist()
        position_ids = text_position_ids(mask, torch.zeros_like(mask[:, 0]), spec)
        hidden = arch.embed(backbone.model, enc["input_ids"], position_ids)
        state = arch.call_state(backbone.model, hidden, 0)
        key_mask = additive_mask(mask.bool(), hidden.dtype)
        for i in range(spec.num_layers):
            if i in states:
                states[i].extend(hidden[j, :n].clone() for j, n in enumerate(lengths))
            hidden = arch.layer(backbone.model, i, hidden, key_mask, state, None)
        base.append(mean_pool(hidden, mask).float())
    return TrunkCache(states, torch.cat(base) if base else torch.zeros(0, spec.hidden_size))


def top_pooled(
    backbone: Backbone,
    hidden: torch.Tensor,
    mask: torch.Tensor,
    first_layer: int,
    key: torch.Tensor,
    value: torch.Tensor,
) -> torch.Tensor:
    """Layers ``first_layer``..L-1 over trunk states ``hidden`` [B, T, H] with one prefix
    (``key``/``value`` [L - first_layer, heads, Lp, head_dim]); mean pooled [B, H]. Differentiable
    in ``key``/``value`` (the backbone's weights are frozen by the caller)."""
    spec = backbone.spec
    if key.shape[0] != spec.num_layers - first_layer:
        raise ValueError(f"key has {key.shape[0]} layers, expected {spec.num_layers - first_layer}")
    rows, lp = hidden.shape[0], key.shape[2]
    pad = key.new_zeros((first_layer, *key.shape[1:]))
    keys = torch.cat([pad, key]).unsqueeze(0)  # the bank layout: [P=1, L, heads, Lp, head_dim]
    values = torch.cat([pad, value]).unsqueeze(0)
    bank = LayerPrefix(keys, values, torch.zeros(rows, dtype=torch.long))
    key_mask = additive_mask(torch.cat([torch.ones(rows, lp, dtype=torch.bool), mask], dim=1), hidden.dtype)
    arch = backbone.arch
    arch.ensure(backbone.model)
    state = arch.call_state(backbone.model, hidden, lp)
    for i in range(first_layer, spec.num_layers):
        hidden = arch.layer(backbone.model, i, hidden, key_mask, state, bank)
    return mean_pool(hidden, mask).float()


def pooled_all(
    backbone: Backbone,
    cache: TrunkCache,
    first_layer: int,
    key: torch.Tensor,
    value: torch.Tensor,
    batch: int = 128,
) -> torch.Tensor:
    """[N, H] prefixed vectors of every text in ``cache`` (no gradients)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(cache), batch):
            idx = list(range(start, min(len(cache), start + batch)))
            hidden, mask = cache.batch(first_layer, idx)
            out.append(top_pooled(backbone, hidden, mask, first_layer, key, value))
    return torch.cat(out) if out else torch.zeros(0, backbone.spec.hidden_size)
