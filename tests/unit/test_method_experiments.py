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


@pytest.mark.parametrize("folder", [TRUNK, TRUNK / "all-mpnet-base-v2"], ids=["minilm", "mpnet"])
def test_the_tables_are_rebuilt_from_the_recorded_runs(folder: Path) -> None:
    report = json.loads((folder / "report.json").read_text())
    assert markdown(report) == (folder / "report.md").read_text()
    shipped = json.loads((folder / "shipped.json").read_text())
    assert shipped_markdown(shipped) == (folder / "shipped.md").read_text()


@pytest.mark.parametrize("task", sorted(SOURCES))
def test_the_shipped_row_is_the_default_recipe(task: str) -> None:
    cfg = cfg_for("s3full-cos", 0, task)
    assert cfg == replace(RECIPES["shipped"], max_length=SOURCES[task][1])
    assert cfg_for("depth4", 0, task).first_layer == 4


@pytest.mark.parametrize("command", ["bench", "run", "targets", "report", "ship", "heads"])
def test_every_command_renders_its_help(command: str) -> None:
    """Each command's help renders (rich markup in a docstring, such as ``[/NAME]``, fails it), and
    the commands that study a backbone take ``--model``."""
    from typer.testing import CliRunner

    from service.method.experiments.cli import app

    out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert ("--model" in out.output) == (command != "bench")
