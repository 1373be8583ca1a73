"""The service benchmark's arithmetic: paired ratios, the report and its plot (FLOPs against torch's
counter: tests/integration/test_bench_flops.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.bench.report import markdown, plot_scaling
from service.bench.service_bench import ServiceBenchConfig, ratios


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


def test_the_shape_table_has_a_ratio_column_per_model_of_ours() -> None:
    from service.bench.report import shapes_markdown

    summary = {
        "vectors_per_s": {"a": {"ours:base": 15.0, "ours:question-type": 14.0, "infinity_torch": 10.0}},
        "ours_vs_fastest_peer": {
            "ours:base": {"a": {"median": 1.5, "rounds": [1.5]}},
            "ours:question-type": {"a": {"median": 1.4, "rounds": [1.4]}},
        },
        "rss_mb": {},
    }
    header, rule, row = shapes_markdown({"shapes": summary})[:3]
    assert header.count("/ fastest infinity") == 2
    assert rule.count("---|") == 6
    assert row == "| (a) | 15.0 | 14.0 | 10.0 | **1.5** (1.5) | **1.4** (1.4) |"
