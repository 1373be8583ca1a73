"""The cache benchmark's request streams and summary (the benchmark itself runs for minutes: its
numbers are in BENCHMARKS.md, never asserted here), and its options on ``bench service``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.bench.cache_bench import cache_markdown, cache_summary, repeat_stream
from service.cli import app


@pytest.mark.parametrize(
    ("n", "repeated", "gap"), [(400, 0.0, 32), (400, 0.5, 32), (400, 0.9, 32), (40, 0.5, 3), (40, 0.9, 3)]
)
def test_a_stream_has_exactly_its_repeats_each_far_enough_after_its_first(
    n: int, repeated: float, gap: int
) -> None:
    stream = repeat_stream(n, repeated, gap=gap, seed=1)
    assert len(stream) == n
    first: dict[str, int] = {}
    repeats = 0
    for i, text in enumerate(stream):
        if text in first:
            repeats += 1
            assert i - first[text] > gap, (i, first[text])
        else:
            first[text] = i
    assert repeats == round(repeated * n)
    assert repeat_stream(n, repeated, gap=gap, seed=1) == stream  # deterministic
    assert not set(stream) & set(repeat_stream(n, repeated, gap=gap, seed=2))  # a new draw: new texts


def test_an_impossible_stream_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot place"):
        repeat_stream(40, 0.9, gap=32, seed=0)


def _phase(rnd: int, level: int, target: str, rate: float, hit: float | None) -> dict[str, Any]:
    return {"phase": "cache", "round": rnd, "repeated_pct": level, "target": target, "vectors_per_s": rate,
            "hit_rate": hit}  # fmt: skip


def test_the_summary_pairs_the_two_servers_within_each_round() -> None:
    phases = [
        _phase(0, 50, "cache_off", 100.0, None),
        _phase(0, 50, "cache_on", 180.0, 0.5),
        _phase(1, 50, "cache_on", 90.0, 0.5),  # a loaded round: both slower, the ratio holds
        _phase(1, 50, "cache_off", 50.0, None),
        _phase(2, 50, "cache_off", 100.0, None),
        _phase(2, 50, "cache_on", 150.0, 0.5),
    ]
    row = cache_summary(phases)["50"]
    assert row["on_vs_off"] == {"median": 1.8, "rounds": [1.8, 1.8, 1.5]}
    assert row["texts_per_s"] == {"cache_on": 150.0, "cache_off": 100.0}
    assert row["hit_rate_on"] == 0.5
    assert "| 50 % | 100.0 | 150.0 | 0.50 | 1.800 (1.800, 1.800, 1.500) |" in cache_markdown(
        {"cache": {"50": row}}
    )


def test_bench_service_takes_the_cache_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def record(cfg: Any) -> Any:
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr("service.bench.service_bench.ServiceBench", record)
    args = ["bench", "service", "--out-dir", str(tmp_path), "--only-cache", "--cache-repeats", "0,50,90"]
    assert isinstance(CliRunner().invoke(app, args).exception, Stop)
    assert (seen["cfg"].cache_repeats, seen["cfg"].only_cache) == ((0, 50, 90), True)
    bad = CliRunner().invoke(app, ["bench", "service", "--out-dir", str(tmp_path), "--only-cache"])
    assert bad.exit_code == 2
    assert "--cache-repeats" in bad.output
