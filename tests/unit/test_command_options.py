"""Every command's settings options come from the one generator (issue 20, item 3): the same flag,
type, help and environment variable as ``serve``'s, never a hand-written copy; every enum-like
option is a choice, so a bad value exits 2 naming the allowed ones."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from service.cli import app
from service.config import Settings
from service.settings_cli import env_name, flag_name, settings_command

# command path -> the settings it must take (each command reads at least these; with "model" also
# "backbones_dir", where a known backbone name is looked up)
_TAKES = {
    "serve": set(Settings.model_fields),
    "ray-serve": set(Settings.model_fields),
    "embed": {"model", "prefix_dir", "backend", "device", "dtype", "forward_chunk_rows", "pooling",
              "pooling_layers", "onnx_cache_dir", "default_prefixes", "include_base", "max_input_tokens",
              "max_batch_tokens"},
    "predict": {"model", "prefix_dir", "backend", "device", "dtype", "forward_chunk_rows", "pooling",
                "pooling_layers", "onnx_cache_dir", "max_input_tokens", "max_batch_tokens"},
    "fit": {"model", "prefix_dir", "backend", "device", "dtype", "forward_chunk_rows", "pooling", "pooling_layers",
            "onnx_cache_dir", "max_input_tokens", "max_batch_tokens", "fit_max_examples", "fit_max_labels",
            "fit_max_vector_bytes", "fit_timeout_s", "fit_chunk_texts"},
    "export-onnx": {"model", "pooling", "pooling_layers", "onnx_cache_dir", "dtype"},
    "bench engine": {"model", "device", "dtype", "forward_chunk_rows", "pooling", "pooling_layers"},
    "bench onnx": {"model", "device", "dtype", "forward_chunk_rows", "pooling", "onnx_cache_dir"},
    "bench service": {"model", "prefix_dir", "device", "dtype", "forward_chunk_rows", "max_batch_tokens"},
    "bench soak": {"model", "backend"},
    "bench ray": {"model", "prefix_dir"},
    "bench predict": {"model", "prefix_dir", "backend"},
    "train": {"model"},
    "calibrate": {"model", "prefix_dir", "device", "dtype", "pooling", "pooling_layers", "max_input_tokens"},
    "evaluate": {"model"},
    "similarity": {"model"},
    "models pin": {"model", "prefix_dir", "served_model_name"},
    "models show": {"model", "prefix_dir"},
    "bench frontier": {"backbones_dir"},
    "backbones list": {"backbones_dir"},
    "backbones install": {"backbones_dir"},
    "backbones verify": {"backbones_dir"},
}  # fmt: skip
TAKES = {path: fields | {"backbones_dir"} if "model" in fields else fields for path, fields in _TAKES.items()}
# a free-text option whose help lists choices on purpose (cuda:N is open-ended)
FREE_TEXT = {"--device"}


def commands(group: Any = None, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, click command) of every leaf command of the CLI."""
    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        full = f"{path} {name}".strip()
        if hasattr(cmd, "commands"):
            yield from commands(cmd, full)
        else:
            yield full, cmd


def options(cmd: Any) -> dict[str, Any]:
    return {opt: p for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}


def choices(param: Any) -> tuple[str, ...]:
    """The allowed values of an option typed with a ``Literal`` (empty: any value of its type)."""
    annotation = param.type_descriptor.annotation
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()


ALL = dict(commands())
SERVE = options(ALL["serve"])


def flat(output: str) -> str:
    return " ".join(re.sub("[│╭╮╰╯─]", " ", output).split())


def test_every_command_is_listed() -> None:
    assert set(ALL) == set(TAKES)


@pytest.mark.parametrize("path", sorted(TAKES))
def test_a_command_takes_its_settings_as_serve_does(path: str) -> None:
    opts = options(ALL[path])
    for field in TAKES[path]:
        flag = flag_name(field)
        assert flag in opts, f"{path} has no {flag}"
        assert env_name(field) in (opts[flag].help or "")
        assert opts[flag].name == field
        assert opts[flag].opts == SERVE[flag].opts
        assert opts[flag].type_descriptor.annotation == SERVE[flag].type_descriptor.annotation


@pytest.mark.parametrize("path", sorted(TAKES))
def test_no_command_declares_a_settings_flag_by_hand(path: str) -> None:
    """An option spelled like a settings flag is the generated one (its help names the variable)."""
    for flag, param in options(ALL[path]).items():
        if flag in SERVE and flag != "--help":
            assert param.name in Settings.model_fields, f"{path} {flag} is hand-written"
            assert env_name(param.name) in (param.help or ""), f"{path} {flag} is hand-written"


def choice_options() -> list[tuple[str, str]]:
    out = []
    for path, cmd in sorted(ALL.items()):
        for p in cmd.params:
            if choices(p) and p.opts[0].startswith("--"):
                out.append((path, p.opts[0]))
    return out


def test_the_enum_options_are_choices() -> None:
    found = set(choice_options())
    expected = {("embed", "--combine"), ("embed", "--encoding"), ("embed", "--backend"),
                ("bench engine", "--dtype"), ("bench onnx", "--pooling"), ("bench service", "--encoding"),
                ("bench service", "--backbone"), ("bench soak", "--backend"), ("export-onnx", "--pooling"),
                ("train", "--init"), ("train", "--schedule"), ("train", "--head-init"),
                ("similarity", "--measure"), ("serve", "--log-level"), ("embed", "--default-prefixes")}  # fmt: skip
    assert expected <= found, expected - found
    # and no other option lists its choices in its help while taking any text
    for path, cmd in ALL.items():
        for p in cmd.params:
            listed = re.match(r"\s*[\w-]+( \| [\w-]+)+\b", p.help or "")
            free = not choices(p) and p.opts[0] not in FREE_TEXT
            assert not (listed and free), f"{path} {p.opts[0]}: choices in its help, but any text accepted"


@pytest.mark.parametrize(("path", "flag"), choice_options())
def test_a_bad_enum_value_exits_2_naming_the_choices(path: str, flag: str) -> None:
    result = CliRunner().invoke(app, [*path.split(), flag, "no-such-value"])
    assert result.exit_code == 2, result.output
    message = flat(result.output)
    assert f"Invalid value for '{flag}'" in message
    assert "'no-such-value' is not one of" in message
    allowed = choices(next(p for p in ALL[path].params if p.opts[0] == flag))
    assert all(repr(c) in message for c in allowed), message


def recorded(**kw: Any) -> tuple[typer.Typer, dict[str, Any]]:
    """A one-command app made by the generator; the command records what it was given."""
    seen: dict[str, Any] = {}

    def cmd(settings: Settings, texts: Annotated[int, typer.Option()] = 3) -> None:
        seen.update(settings=settings, texts=texts)

    one = typer.Typer()
    one.command()(settings_command(cmd, **kw))
    return one, seen


def test_flag_then_environment_then_the_command_default_then_the_settings_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("DEVICE", "FORWARD_CHUNK_ROWS", "POOLING"):
        monkeypatch.delenv(f"PREFIX_EMBED_{name}", raising=False)
    one, seen = recorded(fields=("device", "forward_chunk_rows", "pooling"), defaults={"device": "cpu"})
    runner = CliRunner()
    assert runner.invoke(one, []).exit_code == 0
    s = seen["settings"]
    assert (s.device, s.forward_chunk_rows, s.pooling, seen["texts"]) == ("cpu", None, "mean", 3)
    assert isinstance(s, Settings)
    monkeypatch.setenv("PREFIX_EMBED_DEVICE", "cuda")
    monkeypatch.setenv("PREFIX_EMBED_POOLING", "cls")
    assert runner.invoke(one, ["--chunk-rows", "5", "--texts", "4"]).exit_code == 0
    s = seen["settings"]
    assert (s.device, s.forward_chunk_rows, s.pooling, seen["texts"]) == ("cuda", 5, "cls", 4)
    result = runner.invoke(one, ["--device", "cpu:1", "--forward-chunk-rows", "-1"])
    assert result.exit_code == 2
    assert "--forward-chunk-rows / PREFIX_EMBED_FORWARD_CHUNK_ROWS" in flat(result.output)
    result = runner.invoke(one, ["--port", "1"])  # a setting this command does not take
    assert result.exit_code == 2
    assert "No such option" in flat(result.output)


def test_the_command_default_shows_in_the_help() -> None:
    one, _ = recorded(fields=("device",), defaults={"device": "cpu"})
    out = flat(CliRunner().invoke(one, ["--help"], env={"COLUMNS": "200"}).output)
    assert "(env PREFIX_EMBED_DEVICE; default: cpu)" in out


def test_the_generator_refuses_unknown_fields_defaults_it_does_not_take_and_clashes() -> None:
    def cmd(settings: Settings) -> None: ...

    def clash(settings: Settings, model: Annotated[Path | None, typer.Option()] = None) -> None: ...

    with pytest.raises(TypeError, match="no_such_field"):
        settings_command(cmd, ("model", "no_such_field"))
    with pytest.raises(TypeError, match="device"):
        settings_command(cmd, ("model",), defaults={"device": "cpu"})
    with pytest.raises(TypeError, match="model"):
        settings_command(clash, ("device",))
