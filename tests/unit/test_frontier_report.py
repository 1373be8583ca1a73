"""The frontier's accuracy records and table (service/bench/frontier.py), from a ship record."""

from __future__ import annotations

import json
from pathlib import Path

from service.bench.frontier import Point, accuracy, markdown

TARGETS = ("text-genre", "tweet-sentiment", "email-spam")


def _ship_record(path: Path) -> Path:
    rec = {
        "transfer_members": ["news-topic.seed0", "sentiment.seed0"],
        "concat_with_base": {
            t: {"base": {"accuracy": 0.5 + i / 10}, "float": {"accuracy": 0.6 + i / 10}}
            for i, t in enumerate(TARGETS)
        },
    }
    path.write_text(json.dumps(rec))
    return path


def test_accuracy_of_base_and_of_the_concat(tmp_path: Path) -> None:
    shipped = _ship_record(tmp_path / "shipped.json")
    plain = accuracy(Point("p", "m", False, shipped))
    served = accuracy(Point("s", "m", True, shipped))
    assert plain["targets"] == {"text-genre": 0.5, "tweet-sentiment": 0.6, "email-spam": 0.7}
    assert abs(plain["mean"] - 0.6) < 1e-12
    assert abs(served["mean"] - 0.7) < 1e-12
    assert plain["members"] == ["base"]
    assert served["members"] == ["base", "news-topic", "sentiment"]
    assert "missing" in accuracy(Point("x", "m", True, tmp_path / "absent.json"))["error"]


def test_table_row(tmp_path: Path) -> None:
    shipped = _ship_record(tmp_path / "shipped.json")
    result = {
        "points": {
            "mpnet": {
                "vectors": ["base"],
                "dim": 768,
                "layer_rows_per_text": 12.0,
                "texts_per_s": 20.0,
                "ms_per_text": 50.0,
                "accuracy": accuracy(Point("mpnet", "m", False, shipped)),
            }
        }
    }
    row = markdown(result).splitlines()[-1]
    assert row == "| mpnet | 1 | 768 | 12 | 20.0 | 50.0 | 0.600 | 0.500 | 0.600 | 0.700 |"
