"""``python -m service serve`` in-process: a start-up failure stops the server with exit code 1."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from service.cli import app


def test_serve_exits_1_when_the_model_cannot_load(tmp_path: Path) -> None:
    args = ["serve", "--host", "127.0.0.1", "--port", "0", "--model", str(tmp_path / "missing")]
    result = CliRunner().invoke(app, [*args, "--prefix-dir", str(tmp_path / "prefixes"), "--no-watch"])
    assert result.exit_code == 1, result.output
    assert "start-up failed" in result.output
    assert "has no config.json" in result.output
