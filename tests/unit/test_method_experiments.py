"""The experiments module against what it recorded: its tables from the committed run records are
the committed tables, and its shipped row is ``train``'s default recipe."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from service.method.experiments.report import markdown, shipped_markdown
from service.method.experiments.rows import SOURCES, cfg_for
from service.method.recipe import RECIPES

TRUNK = Path(__file__).resolve().parents[2] / "results" / "trunk"


def test_the_tables_are_rebuilt_from_the_recorded_runs() -> None:
    report = json.loads((TRUNK / "report.json").read_text())
    assert markdown(report) == (TRUNK / "report.md").read_text()
    shipped = json.loads((TRUNK / "shipped.json").read_text())
    assert shipped_markdown(shipped) == (TRUNK / "shipped.md").read_text()


@pytest.mark.parametrize("task", sorted(SOURCES))
def test_the_shipped_row_is_the_default_recipe(task: str) -> None:
    cfg = cfg_for("s3full-cos", 0, task)
    assert cfg == replace(RECIPES["shipped"], max_length=SOURCES[task][1])
    assert cfg_for("depth4", 0, task).first_layer == 4
