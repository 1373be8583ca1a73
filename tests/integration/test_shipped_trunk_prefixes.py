"""The shipped prefixes load and validate, and the shared-trunk ones carry recipe, provenance and
source-value metadata showing they beat base on their own task."""

from __future__ import annotations

from pathlib import Path

from service.engine.backbone import Backbone
from service.method.prefix_io import load_prefixes

PREFIXES = Path(__file__).resolve().parents[2] / "prefixes"
# the five source tasks of issue 11, shipped as shared-trunk prefixes (RESULTS.md)
SOURCE_TASKS = {"question-type", "sentiment", "sms-spam", "news-topic", "editorial-sentiment"}


def test_shipped_prefixes_load_and_carry_their_measurements(minilm: Backbone) -> None:
    loaded = {p.name: p for p in load_prefixes([PREFIXES], minilm.spec)}
    trunk = [p for p in loaded.values() if p.first_layer > 0]
    assert {p.name for p in trunk} >= SOURCE_TASKS
    for p in trunk:
        meta = p.metadata
        assert p.position_convention == "none"
        assert p.key.shape[0] == minilm.spec.num_layers - p.first_layer
        assert meta["recipe"].startswith(f"S={p.first_layer} ")
        assert meta["task"] == p.name
        assert meta["data"]["package"]
        assert meta["data"]["licence"]
        value = meta["source_value"]
        assert abs(value["prefix"]["accuracy"] - value["base"]["accuracy"] - value["gain"]) < 1e-9
        assert value["gain"] > 0  # a shipped prefix beats base on its own task's test split
        assert value["n_test"] > 0
