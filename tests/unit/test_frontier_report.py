"""The frontier's accuracy records and table (service/bench/frontier.py), from a ship record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.bench.frontier import Point, accuracy, greedy_sets, markdown

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


def _fit_record(path: Path) -> Path:
    sources = ["base", "news-topic", "sentiment"]
    kept = {
        "text-genre": ["base", "news-topic"],
        "tweet-sentiment": ["base", "sentiment"],
        "email-spam": ["base"],
    }
    rows = [
        {
            "target": t,
            "draw": d,
            "rule": rule,
            "prefixes": sources,
            "accuracy": 0.4 + i / 10 + d / 100,
            "inputs": kept[t],
        }
        for i, t in enumerate(TARGETS)
        for d in (0, 1)
        for rule in ("base", "greedy")
    ]
    rows.append(  # a row over other sources (an earlier run) is not read
        {
            "target": "email-spam",
            "draw": 0,
            "rule": "greedy",
            "prefixes": ["base"],
            "accuracy": 0.0,
            "inputs": ["base"],
        }
    )
    path.write_text(json.dumps({"prefixes": {"news-topic": "d1", "sentiment": "d2"}, "rows": rows}))
    return path


def test_greedy_point_reads_the_test_rows_and_the_sets_kept_per_target(tmp_path: Path) -> None:
    shipped = _ship_record(tmp_path / "shipped.json")
    point = Point("g", "m", True, shipped, _fit_record(tmp_path / "rules.json"))
    acc = accuracy(point)
    assert acc["targets"] == pytest.approx({"text-genre": 0.4, "tweet-sentiment": 0.5, "email-spam": 0.6})
    assert abs(acc["mean"] - 0.5) < 1e-12
    assert acc["members"] == greedy_sets(point)
    assert greedy_sets(point)["text-genre"] == ["base", "news-topic"]
    assert "fit-rules" in accuracy(Point("x", "m", True, shipped, tmp_path / "absent.json"))["error"]
    result = {
        "points": {
            "g": {
                "vectors": list(greedy_sets(point).values()),
                "dim": 384 * 5 / 3,
                "layer_rows_per_text": 10.0,
                "texts_per_s": 20.0,
                "ms_per_text": 50.0,
                "accuracy": acc,
            }
        }
    }
    assert (
        markdown(result).splitlines()[-1]
        == "| g | 1.7 | 640 | 10 | 20.0 | 50.0 | 0.500 | 0.400 | 0.500 | 0.600 |"
    )
