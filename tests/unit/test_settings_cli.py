"""``serve`` flags are generated from Settings: one per field, typed, described, validated (issue 14.3)."""

from __future__ import annotations

import typing
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from service.cli import app
from service.config import Settings
from service.settings_cli import env_name, flag_name, settings_from_flags
from tests.support.cli_output import flat


def serve_options() -> dict[str, Any]:
    """Flag -> its click option (typer's own click: duck-typed)."""
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    return {opt: p for p in serve.params for opt in (*p.opts, *p.secondary_opts)}


def literal_fields() -> list[str]:
    out = []
    for name, info in Settings.model_fields.items():
        args = [a for a in typing.get_args(info.annotation) if a is not type(None)] or [info.annotation]
        if any(typing.get_origin(a) is typing.Literal for a in [info.annotation, *args]):
            out.append(name)
    return out


def test_every_setting_is_a_serve_flag_with_its_help() -> None:
    options = serve_options()
    for name, info in Settings.model_fields.items():
        assert flag_name(name) in options, f"setting {name} has no serve flag"
        help_text = options[flag_name(name)].help or ""
        assert env_name(name) in help_text
        if info.description:
            assert info.description.rstrip(".") in help_text
        if info.annotation is bool:
            assert f"--no-{name.replace('_', '-')}" in options  # --watch / --no-watch
    # and nothing else: no hand-written flag that is not a setting
    assert {p.name for p in set(options.values())} == set(Settings.model_fields)


def test_every_setting_has_a_description() -> None:
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []


@pytest.mark.parametrize("field", literal_fields())
def test_a_bad_enum_value_exits_2_naming_the_choices(field: str) -> None:
    result = CliRunner().invoke(app, ["serve", flag_name(field), "no-such-value"])
    assert result.exit_code == 2, result.output
    message = flat(result.output)
    assert f"Invalid value for '{flag_name(field)}'" in message
    assert "'no-such-value' is not one of" in message
    assert "Traceback" not in message


def test_enums_are_literal_settings() -> None:
    assert {"backend", "dtype", "pooling", "batch_slot_policy", "log_level"} <= set(literal_fields())


def test_out_of_range_flag_and_bad_environment_exit_2_naming_the_setting() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--port", "70000"])
    assert result.exit_code == 2, result.output
    assert "--port / PREFIX_EMBED_PORT" in flat(result.output)
    result = runner.invoke(app, ["serve"], env={"PREFIX_EMBED_POOLING": "max"})
    assert result.exit_code == 2, result.output
    assert "PREFIX_EMBED_POOLING" in flat(result.output)


def test_flags_win_over_the_environment_which_wins_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFIX_EMBED_PORT", "1234")
    monkeypatch.setenv("PREFIX_EMBED_MAX_CLIENT_BATCH", "7")
    s = settings_from_flags({"port": 9000, "api_keys": ["a", "b"], "watch": False, "host": None})
    assert (s.port, s.max_client_batch, s.host, s.watch) == (9000, 7, "127.0.0.1", False)
    assert [k.get_secret_value() for k in s.api_keys] == ["a", "b"]


def test_no_machine_specific_default_in_the_schema() -> None:
    # paths are resolved when settings are made (config.py), not written into the class
    info = Settings.model_fields["onnx_cache_dir"]
    assert info.default_factory is not None
    assert str(Settings().onnx_cache_dir).endswith("prefix-embed/onnx")
