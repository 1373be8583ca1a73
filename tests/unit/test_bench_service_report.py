"""The service benchmark's arithmetic: model FLOPs against torch's counter, paired ratios, plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from service.bench.flops import row_flops
from service.bench.report import markdown, plot_scaling
from service.bench.service_bench import ServiceBenchConfig, ratios
from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.prefix import LoadedPrefix
from service.engine.torch_encoder import TorchEncoder


def test_row_flops_match_torch_counted_matmuls(tiny_bert: Backbone) -> None:
    spec = tiny_bert.spec
    enc = TorchEncoder(tiny_bert, chunk_rows=0)
    batch = enc.tokenize(["one two three four five six seven"], max_length=64, truncate=True)
    lp = 5
    kv = torch.zeros(spec.num_layers, spec.num_heads, lp, spec.head_dim)
    bank = PrefixBank.build([LoadedPrefix("p", "d", kv, kv.clone(), "none", "<test>", "native")])
    with FlopCounterMode(display=False) as plain:
        enc.encode_plain(batch)
    with FlopCounterMode(display=False) as prefixed:
        enc.encode(batch, bank, [0])
    t, h, f = batch.lengths[0], spec.hidden_size, tiny_bert.model.config.intermediate_size
    attention = spec.num_layers * 4 * t * (t + lp) * h  # SDPA on CPU is not counted by torch
    # The linear layers cost the same with a prefix: its K/V are given, not projected.
    assert prefixed.get_total_flops() == plain.get_total_flops() == row_flops(spec, f, t, lp) - attention
    assert row_flops(spec, f, t, lp) - row_flops(spec, f, t, 0) == spec.num_layers * 4 * t * lp * h


def _phase(name: str, vps: float, **extra: Any) -> dict[str, Any]:
    base = {"concurrency": 64, "requests": 8, "ok": 8, "p50_ms": 1.0, "p99_ms": 2.0, "loadavg": [1.0]}
    return {"phase": name, "vectors_per_s": vps, **base, **extra}


def test_ratios_pair_phases_of_the_same_round_and_report_their_median(tmp_path: Path) -> None:
    cfg = ServiceBenchConfig(out_dir=tmp_path, concurrency=[64], scaling=[1, 8])
    phases = [
        _phase("raw_encoder", 10.0, prefixes=1),
        _phase("raw_encoder", 40.0, prefixes=8),
        _phase("service_scaling", 9.0, P=1),
        _phase("service_scaling", 44.0, P=8),
    ]
    for rnd, (raw, allp, split) in enumerate([(40.0, 36.0, 20.0), (20.0, 19.0, 10.0), (40.0, 20.0, 19.0)]):
        phases += [
            _phase("ratio_raw_encoder", raw, round=rnd, prefixes=8),
            _phase("ratio_all_prefixes", allp, round=rnd, P=8),
            _phase("ratio_one_prefix_per_request", split, round=rnd, P=8),
            _phase("peer_ours_one_prefix", allp, round=rnd),
            _phase("peer_infinity", raw, round=rnd),
        ]
    out = ratios(phases, cfg)
    assert out["service_vs_raw_encoder"] == {"median": 0.9, "rounds": [0.9, 0.95, 0.5]}
    assert out["all_prefixes_vs_one_prefix_per_request"]["rounds"] == [1.8, 1.9, 1.053]
    assert out["all_prefixes_vs_one_prefix_per_request"]["median"] == 1.8
    assert out["ours_vs_infinity_one_prefix"]["64"]["median"] == 0.9
    assert out["service_vs_raw_by_P_single_pass"] == {"1": 0.9, "8": 1.1}

    result = {"machine": {"cpu": "test cpu", "gpu": None}, "phases": phases, "ratios": out}
    png = plot_scaling(result, tmp_path / "scaling.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = markdown(result)
    assert "| ratio_all_prefixes | 2 | 8 | 64 | 20.0 |" in table
    assert "| raw_encoder |  | 8 | 40.0 |" in table
