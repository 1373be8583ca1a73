"""The ``serve`` flags, generated from :class:`service.config.Settings` (one flag per field).

Each field becomes ``--field-name`` with its type (an enum setting is a ``Literal``, so the CLI
refuses a bad value with the allowed ones, exit status 2), its help from ``Field(description=...)``
and its environment variable. A flag not given is not passed, so the environment and then the
field's default apply: flags win over ``PREFIX_EMBED_*`` variables, which win over defaults.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import typer
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from service.config import Settings

# Fields whose flag is not just --field-name: a list is given by repeating a singular flag.
FLAG_NAMES = {"api_keys": "--api-key"}


def flag_name(field: str) -> str:
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def env_name(field: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def _strip_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _cli_type(annotation: Any) -> Any:
    """The type typer parses: Literal stays (validated choices), SecretStr is given as str."""
    inner = _strip_optional(annotation)
    if typing.get_origin(inner) is typing.Annotated:
        inner = typing.get_args(inner)[0]
    if inner is SecretStr:
        return str
    if typing.get_origin(inner) is list:
        (item,) = typing.get_args(inner)
        return list[str] if item is SecretStr else list[item]  # type: ignore[valid-type]
    if typing.get_origin(inner) is Literal or inner in (str, int, float, bool, Path):
        return inner
    raise TypeError(f"no CLI type for a setting of type {annotation!r}: extend service/settings_cli.py")


def _default_text(info: FieldInfo) -> str:
    if info.default is PydanticUndefined or info.default is None:
        return ""
    if isinstance(info.default, bool):
        return f"; default: {str(info.default).lower()}"
    return f"; default: {info.default}"


def _help(field: str, info: FieldInfo) -> str:
    text = (info.description or field.replace("_", " ")).rstrip(".")
    return f"{text}. (env {env_name(field)}{_default_text(info)})"


def settings_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per Settings field, typed and described for typer (default None)."""
    params = []
    for field, info in Settings.model_fields.items():
        cli_type = _cli_type(info.annotation)
        if cli_type is bool:
            dashed = field.replace("_", "-")
            option = typer.Option(f"--{dashed}/--no-{dashed}", help=_help(field, info))
        else:
            option = typer.Option(flag_name(field), help=_help(field, info))
        annotation = Annotated[cli_type | None, option]  # type: ignore[valid-type]
        params.append(
            inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        )
    return params


def settings_command(func: Callable[..., None]) -> Callable[..., None]:
    """Turn ``func(settings, **own)`` into a typer command taking every setting as a flag, beside
    ``func``'s own keyword options (typed ``Annotated[..., typer.Option(...)]``; e.g. ``ray-serve``'s
    replica counts). One generator for every command that takes the service's settings."""
    hints = typing.get_type_hints(func, include_extras=True)
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[name])
        for name, p in inspect.signature(func).parameters.items()
        if name != "settings"
    ]
    clash = {p.name for p in own} & set(Settings.model_fields)
    if clash:
        raise TypeError(f"{func.__name__}: options {sorted(clash)} are Settings fields already")

    @functools.wraps(func)
    def command(**given: Any) -> None:
        mine = {p.name: given.pop(p.name) for p in own}
        func(settings_from_flags(given), **mine)

    params = own + settings_parameters()
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    del command.__wrapped__  # typer must read the generated signature, not func's
    return command


def _where(field: str) -> str:
    return f"{flag_name(field)} / {env_name(field)}" if field in Settings.model_fields else field


def settings_from_flags(given: dict[str, Any]) -> Settings:
    """Settings from the flags that were given (others: environment, then defaults).

    A value the Settings class refuses (e.g. ``--port 70000``, or a bad ``PREFIX_EMBED_*``
    variable) is a usage error (exit status 2) naming the setting, not a traceback.
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    overrides = {k: v for k, v in given.items() if v is not None and v != []}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_where(str(e['loc'][0])) if e['loc'] else 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise typer.BadParameter(problems) from None
    except SettingsError as exc:
        raise typer.BadParameter(str(exc)) from None
