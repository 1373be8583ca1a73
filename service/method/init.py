"""Training initialisation: where a new prefix starts, and the metadata ``init`` that records it.

- ``normal`` (the default): a seeded N(0, std^2) draw, the same for every task of one backbone,
  depth, length and seed (service/registry/init_record.py holds the draws, so that serving can
  reproduce a recorded start for task similarity);
- ``tokens`` (native prefixes): the keys and values real tokens have in each layer (prefix-tuning's
  advice), from a fixed set of neutral sentences, so every task starts from the same point too;
- ``projection``: an MLP over a table (its start is not recorded as a reproducible draw).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from service.engine.backbone import Backbone
from service.method.recipe import TrainConfig
from service.method.trunk import build_trunk_cache

# Neutral sentences whose tokens' keys/values start a ``tokens``-initialized prefix (fixed, so the
# start point depends only on backbone, depth, length and seed).
INIT_SENTENCES = (
    "The report was published on Monday and describes the results in some detail.",
    "She asked whether the meeting could be moved to the afternoon.",
    "Prices rose slightly last year, while the number of visitors stayed the same.",
    "This is a short note about the weather, the road and the evening train.",
    "He thought the film was long but the music was good.",
    "What time does the library open on Saturday?",
    "Please send me the documents before the end of the week.",
    "The team won the match after a difficult first half.",
)


@torch.no_grad()
def token_kv(
    backbone: Backbone, first_layer: int, prefix_len: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys/values [L-S, heads, Lp, head_dim] of ``prefix_len`` real tokens of :data:`INIT_SENTENCES`
    (drawn with ``seed``; the same tokens in every layer), computed by each layer's own projections."""
    spec = backbone.spec
    cache = build_trunk_cache(backbone, INIT_SENTENCES, None, range(spec.num_layers), max_length=64)
    positions = [(t, j) for t, s in enumerate(cache.states[0]) for j in range(s.shape[0])]
    picked = random.Random(seed).sample(positions, prefix_len)
    keys, values = [], []
    for i in range(first_layer, spec.num_layers):
        h = torch.stack([cache.states[i][t][j] for t, j in picked])  # [Lp, hidden], the input of layer i
        attn: Any = backbone.model.encoder.layer[i].attention.self  # type: ignore[index,union-attr]
        shape = (prefix_len, spec.num_heads, spec.head_dim)
        keys.append(attn.key(h).view(shape).transpose(0, 1))
        values.append(attn.value(h).view(shape).transpose(0, 1))
    return torch.stack(keys).float(), torch.stack(values).float()


def init_record(cfg: TrainConfig) -> dict[str, Any]:
    """Metadata ``init``: how the prefix of ``cfg`` started (``normal``/``normal-kv`` records can be
    drawn again by service/registry/init_record.py)."""
    if cfg.projection:
        return {"method": "projection", "seed": cfg.seed, "std": cfg.init_std}
    if cfg.init == "tokens":
        return {"method": "tokens", "seed": cfg.seed, "sentences": "service.method.init.INIT_SENTENCES"}
    return {"method": "normal" if cfg.peft else "normal-kv", "seed": cfg.seed, "std": cfg.init_std}
