"""MPNet written out by hand (float64, one text under one prefix, no padding, no batching): the
independent reference for the engine's MPNet adapter, from the modules' weights only.

The relative position bucket is MPNet's formula (fairseq / the MPNet paper, as T5's bidirectional
buckets) in plain Python; the prefix rule under test: prefix slots get no position bias, text keys
keep the relative bias between text positions, and a ``peft``-convention prefix shifts the absolute
text positions by its length.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from service.engine.backbone import Backbone
from service.engine.prefix import LoadedPrefix
from tests.support.by_hand import lin, ln, pooled

MPNET_FIRST_POSITION = 2  # MPNet's padding index is 1; text positions start after it
# 3 to ~40 tokens: relative distances past MPNet's 8 exact buckets into the logarithmic ones
TEXTS = [
    "short one",
    "a somewhat longer text about markets, interest rates, the weather and the price of bread in "
    "the winter months of a long and rather cold year, as the old farmers used to say at the market",
    "x",
    "Transformers encode text; prefixes steer what the encoder attends to.",
]


def bucket(rel: int, num_buckets: int = 32, max_distance: int = 128) -> int:
    """Bucket of the relative position ``rel`` = key position - query position."""
    half = num_buckets // 2
    base = half if rel > 0 else 0  # keys after the query use the upper half
    n = abs(rel)
    exact = half // 2
    if n < exact:
        return base + n
    log_part = int(math.log(n / exact) / math.log(max_distance / exact) * (half - exact))
    return base + min(half - 1, exact + log_part)


def position_bias(model: Any, t: int) -> torch.Tensor:
    """[heads, t, t]: the learned bias of each (query, key) pair's bucket."""
    table = model.encoder.relative_attention_bias.weight.double()  # [buckets, heads]
    idx = torch.tensor([[bucket(k - q) for k in range(t)] for q in range(t)])
    return table[idx].permute(2, 0, 1)


def reference(
    backbone: Backbone,
    ids: list[int],
    prefix: LoadedPrefix | None,
    pooling: str,
    pooling_layers: int = 4,
    prefix_bias: str = "none",
) -> np.ndarray:
    """The pooled vector of one text (token ids, special tokens included) under ``prefix`` (None: the
    plain backbone). ``prefix_bias``: the rule for the prefix slots, ``none`` (the engine's) or
    ``nearest`` (an alternative, to show that the rule is observable: slots get the bias of distance 0)."""
    model: Any = backbone.model
    spec = backbone.spec
    heads, hd = spec.num_heads, spec.head_dim
    t = len(ids)
    shift = prefix.position_shift if prefix is not None else 0
    tok = torch.tensor(ids)
    positions = torch.arange(t) + MPNET_FIRST_POSITION + shift
    emb = model.embeddings
    x = ln(
        emb.word_embeddings.weight.double()[tok] + emb.position_embeddings.weight.double()[positions],
        emb.LayerNorm,
    )
    bias = position_bias(model, t)
    states = [x]
    first = prefix.first_layer if prefix is not None else spec.num_layers
    for i, layer in enumerate(model.encoder.layer):
        att = layer.attention.attn
        q = lin(x, att.q).view(t, heads, hd).transpose(0, 1)
        k = lin(x, att.k).view(t, heads, hd).transpose(0, 1)
        v = lin(x, att.v).view(t, heads, hd).transpose(0, 1)
        b = bias
        if prefix is not None and i >= first:
            lp = prefix.prefix_len
            k = torch.cat([prefix.key[i - first].double(), k], dim=1)
            v = torch.cat([prefix.value[i - first].double(), v], dim=1)
            if prefix_bias == "none":
                slots = torch.zeros(heads, t, lp, dtype=torch.float64)
            else:
                slots = position_bias(model, 1)[:, :1, :1].expand(heads, t, lp)
            b = torch.cat([slots, bias], dim=2)
        probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + b, dim=-1)
        ctx = (probs @ v).transpose(0, 1).reshape(t, heads * hd)
        a = ln(lin(ctx, att.o) + x, layer.attention.LayerNorm)
        inter = F.gelu(lin(a, layer.intermediate.dense))
        x = ln(lin(inter, layer.output.dense) + a, layer.output.LayerNorm)
        states.append(x)
    return pooled(states, pooling, pooling_layers)
