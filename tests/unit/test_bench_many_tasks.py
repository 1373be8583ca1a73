"""The many-task pricing's summary (issue 27 item 4) and the shape bench's server variants, as rules:
medians and per-round ratios against a hand computation, layer-rows per text from the trunk formula."""

from __future__ import annotations

from typing import Any

from service.bench.many_tasks import layer_rows_per_text, many_task_summary
from service.bench.shapes import OUR_VARIANTS, default_shapes


def phase(rnd: int, target: str, p: int, rate: float, rows: int) -> dict[str, Any]:
    return {"phase": "many_tasks", "round": rnd, "target": target, "P": p, "texts_per_s": rate,
            "vectors_per_s": rate * p, "layer_rows_per_text": rows}  # fmt: skip


def test_summary_medians_and_ratios_to_the_fastest_peer_per_round() -> None:
    phases = [
        phase(0, "ours", 4, 100.0, 15),
        phase(1, "ours", 4, 80.0, 15),
        phase(2, "ours", 4, 90.0, 15),
        phase(0, "inf_a", 4, 20.0, 24),
        phase(1, "inf_a", 4, 40.0, 24),
        phase(2, "inf_a", 4, 30.0, 24),
        phase(0, "inf_b", 4, 25.0, 24),
        phase(1, "inf_b", 4, 10.0, 24),
        phase(2, "inf_b", 4, 45.0, 24),
    ]
    out = many_task_summary(phases, ["inf_a", "inf_b"])
    assert out["ours"]["4"]["texts_per_s"] == 90.0
    assert out["ours"]["4"]["vectors_per_s"] == 360.0
    assert out["ours"]["4"]["vs_fastest_peer"]["rounds"] == [4.0, 2.0, 2.0]  # 100/25, 80/40, 90/45
    assert out["ours"]["4"]["vs_fastest_peer"]["median"] == 2.0
    assert "vs_fastest_peer" not in out["inf_a"]["4"]


def test_layer_rows_per_text_follow_the_trunk() -> None:
    assert layer_rows_per_text("ours", 6, 3, 6) == 3 + 6 * 3  # base + 5 shipped prefixes from layer 3
    assert layer_rows_per_text("ours", 6, 3, 1) == 5 + 1  # base alone: trunk to L-1, then one row
    assert layer_rows_per_text("peer", 6, 3, 6) == 36  # six models, six full passes


def test_variants_and_gpu_concurrency() -> None:
    assert OUR_VARIANTS["ours"] == {}
    assert OUR_VARIANTS["ours_int8"] == {"PREFIX_EMBED_DTYPE": "int8"}
    shapes = {s.name: s for s in default_shapes(1.0, 256)}
    assert shapes["a"].concurrency == 1
    assert shapes["b"].concurrency == shapes["c"].concurrency == 256
    assert shapes["b"].requests >= 512
    assert shapes["c"].requests >= 512
    assert [s.concurrency for s in default_shapes()] == [1, 32, 4]
