"""The experiments module against what it recorded: its tables from the committed run records are
the committed tables, and its shipped row is ``train``'s default recipe."""

from __future__ import annotations

import json
import os
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


@pytest.mark.parametrize("command", ["bench", "run", "targets", "report", "ship", "heads", "quantization"])
def test_every_command_renders_its_help(command: str) -> None:
    """Each command's help renders (rich markup in a docstring, such as ``[/NAME]``, fails it), and
    the commands that study a backbone take ``--model``."""
    from typer.testing import CliRunner

    from service.method.experiments.cli import app

    out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert ("--model" in out.output) == (command != "bench")


def test_a_trunk_cache_claim_left_by_an_exited_process_is_taken_over(tmp_path: Path) -> None:
    """A stopped run leaves its lock behind: the next run builds the cache instead of waiting an
    hour for a file nobody writes; a live holder's claim is still waited for."""
    import subprocess
    import sys

    from service.method.experiments.rows import built_once

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    file = tmp_path / "task.pt"
    file.with_suffix(".lock").write_text(gone.stdout.strip())
    assert built_once(file, lambda: {"built": 1}, wait_s=0) == {"built": 1}
    assert file.with_suffix(".lock").read_text() == str(os.getpid())
    live = tmp_path / "other.pt"
    live.with_suffix(".lock").write_text(str(os.getpid()))  # held by a running process (this one)
    with pytest.raises(TimeoutError):
        built_once(live, lambda: {"built": 2}, wait_s=0)
