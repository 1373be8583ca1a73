"""Choosing the backbone: ``--model`` takes a known name (resolved to its installed folder, bringing
its shipped prefix folder) or a folder path; an explicit prefix_dir wins; an uninstalled name names
the install command."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.backbones.catalog import ALL_MPNET_BASE_V2, PROVENANCE_FILE, default_model_folder
from service.cli import app
from service.config import Settings


def _installed(root: Path) -> Path:
    folder = root / "all-mpnet-base-v2"
    folder.mkdir(parents=True)
    (folder / PROVENANCE_FILE).write_text("{}")
    return folder


def test_default_is_minilm_with_prefixes(tmp_path: Path) -> None:
    s = Settings(backbones_dir=tmp_path)
    assert s.model_path() == default_model_folder()
    assert s.prefix_dir == Path("prefixes")
    assert s.model_name() == "all-MiniLM-L6-v2"
    named = Settings(model="all-MiniLM-L6-v2", backbones_dir=tmp_path)  # type: ignore[arg-type]
    assert named.model_path() == default_model_folder()
    assert named.prefix_dir == Path("prefixes")


def test_known_name_brings_its_folder_and_prefix_folder(tmp_path: Path) -> None:
    folder = _installed(tmp_path)
    s = Settings(model="all-mpnet-base-v2", backbones_dir=tmp_path)  # type: ignore[arg-type]
    assert s.model_path() == folder
    assert s.prefix_dir == ALL_MPNET_BASE_V2.prefix_dir == Path("prefixes-all-mpnet-base-v2")
    assert s.model_name() == "all-mpnet-base-v2"
    explicit = Settings(model="all-mpnet-base-v2", backbones_dir=tmp_path, prefix_dir="mine")  # type: ignore[arg-type]
    assert explicit.prefix_dir == Path("mine")


def test_known_name_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _installed(tmp_path)
    monkeypatch.setenv("PREFIX_EMBED_MODEL", "all-mpnet-base-v2")
    monkeypatch.setenv("PREFIX_EMBED_BACKBONES_DIR", str(tmp_path))
    s = Settings()
    assert (s.model_path(), s.prefix_dir) == (folder, Path("prefixes-all-mpnet-base-v2"))
    monkeypatch.setenv("PREFIX_EMBED_PREFIX_DIR", "elsewhere")
    assert Settings().prefix_dir == Path("elsewhere")


def test_a_path_is_a_path(tmp_path: Path) -> None:
    s = Settings(model=tmp_path / "all-mpnet-base-v2", backbones_dir=tmp_path / "none")
    assert s.model_path() == tmp_path / "all-mpnet-base-v2"
    assert s.prefix_dir == Path("prefixes")


def test_uninstalled_name_says_how_to_install(tmp_path: Path) -> None:
    s = Settings(model="all-mpnet-base-v2", backbones_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"python -m service backbones install all-mpnet-base-v2"):
        s.model_path()


def test_backbones_cli_lists_and_refuses_unknown(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["backbones", "list", "--backbones-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "all-mpnet-base-v2" in out.output
    assert "not installed" in out.output
    assert "prefixes-all-mpnet-base-v2/" in out.output
    bad = runner.invoke(app, ["backbones", "install", "gpt-17", "--backbones-dir", str(tmp_path)])
    assert bad.exit_code == 2
    assert "unknown backbone 'gpt-17'" in bad.output
