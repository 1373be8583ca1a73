"""The service benchmark's FLOP model against torch's own counter, on the tiny random BERT."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from service.bench.flops import row_flops
from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.prefix import LoadedPrefix
from service.engine.torch_encoder import TorchEncoder
from tests.support.prefixes import base_vectors


def test_row_flops_match_torch_counted_matmuls(tiny_bert: Backbone) -> None:
    spec = tiny_bert.spec
    enc = TorchEncoder(tiny_bert, chunk_rows=0)
    batch = enc.tokenize(["one two three four five six seven"], max_length=64, truncate=True)
    lp = 5
    kv = torch.zeros(spec.num_layers, spec.num_heads, lp, spec.head_dim)
    bank = PrefixBank.build([LoadedPrefix("p", "d", kv, kv.clone(), "none", "<test>", "native")])
    with FlopCounterMode(display=False) as plain:
        base_vectors(enc, batch)
    with FlopCounterMode(display=False) as prefixed:
        enc.encode(batch, bank, [0])
    t, h, f = batch.lengths[0], spec.hidden_size, tiny_bert.model.config.intermediate_size
    attention = spec.num_layers * 4 * t * (t + lp) * h  # SDPA on CPU is not counted by torch
    # The linear layers cost the same with a prefix: its K/V are given, not projected.
    assert prefixed.get_total_flops() == plain.get_total_flops() == row_flops(spec, f, t, lp) - attention
    assert row_flops(spec, f, t, lp) - row_flops(spec, f, t, 0) == spec.num_layers * 4 * t * lp * h
