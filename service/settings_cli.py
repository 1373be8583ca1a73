"""Every command's settings flags, generated from :class:`service.config.Settings` (one per field).

Each field becomes ``--field-name`` with its type (an enum setting is a ``Literal``, so the CLI
refuses a bad value with the allowed ones, exit status 2), its help from ``Field(description=...)``
and its environment variable. A flag not given is not passed, so the environment and then the
field's default apply: flags win over ``PREFIX_EMBED_*`` variables, which win over defaults.
``serve`` and ``ray-serve`` take every field; other commands the fields their work reads (the groups
below), with the same flags, variables, help and checks.
"""

from __future__ import annotations

import copy
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import typer
from pydantic import SecretStr, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from service.config import Settings

# Fields whose flag is not just --field-name: a list is given by repeating a singular flag.
FLAG_NAMES = {"api_keys": "--api-key"}
# Further names a flag answers to (older spellings that commands and docs still use).
FLAG_ALIASES = {"forward_chunk_rows": ("--chunk-rows",)}

# The settings a piece of work reads, for commands that take only those.
TORCH_ENGINE = (
    "model",
    "device",
    "dtype",
    "pooling",
    "pooling_layers",
    "forward_chunk_rows",
    "max_input_tokens",
)
ONNX_ENGINE = (*TORCH_ENGINE, "onnx_cache_dir", "onnx_threads", "onnx_parallel_calls", "onnx_spinning")
ENGINE = ("backend", *ONNX_ENGINE)  # service/backend.py build_encoder
ONNX_EXPORT = ("model", "pooling", "pooling_layers", "onnx_cache_dir", "dtype")
PREFIX_FOLDER = ("prefix_dir", "max_prefix_len", "max_prefix_file_bytes", "prefix_settle_ms")
# the embedding pipeline (service/pipeline.py) and its batcher, beyond the engine and the folder
EMBEDDING = (
    "served_model_name",
    "default_prefixes",
    "include_base",
    "max_batch_tokens",
    "max_input_chars",
    "request_timeout_s",
)

# fitting a head (service/fitting/): the bounds of one fit
FIT = ("fit_max_examples", "fit_max_labels", "fit_max_vector_bytes", "fit_timeout_s", "fit_chunk_texts")


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


def settings_parameters(
    fields: Iterable[str] | None = None, settings_class: type[Settings] = Settings
) -> list[inspect.Parameter]:
    """One keyword parameter per field (default: every Settings field), typed and described for
    typer (default None)."""
    params = []
    for field in settings_class.model_fields if fields is None else fields:
        info = settings_class.model_fields[field]
        cli_type = _cli_type(info.annotation)
        if cli_type is bool:
            dashed = field.replace("_", "-")
            option = typer.Option(f"--{dashed}/--no-{dashed}", help=_help(field, info))
        else:
            option = typer.Option(flag_name(field), *FLAG_ALIASES.get(field, ()), help=_help(field, info))
        annotation = Annotated[cli_type | None, option]  # type: ignore[valid-type]
        params.append(
            inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        )
    return params


def with_defaults(defaults: Mapping[str, Any]) -> type[Settings]:
    """Settings whose fields in ``defaults`` default to those values instead (same types, checks and
    variables): a command's own default, below its flag and the environment (e.g. ``bench service``
    runs on the CPU unless told otherwise)."""
    if not defaults:
        return Settings
    fields: dict[str, Any] = {}
    for field, value in defaults.items():
        info = copy.copy(Settings.model_fields[field])
        info.default, info.default_factory = value, None
        fields[field] = (info.annotation, info)
    return create_model("Settings", __base__=Settings, **fields)


def settings_command(
    func: Callable[..., None],
    fields: Iterable[str] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> Callable[..., None]:
    """Turn ``func(settings, **own)`` into a typer command taking settings as flags (``fields``, in
    that order; default: every field), beside ``func``'s own options (typed
    ``Annotated[..., typer.Option(...)]`` or ``typer.Argument``; e.g. ``ray-serve``'s replica
    counts). ``defaults``: this command's own defaults of some of ``fields``. One generator for
    every command that takes the service's settings: the settings a command does not list still
    come from the environment and their defaults."""
    chosen = list(Settings.model_fields if fields is None else dict.fromkeys(fields))
    defaults = defaults or {}
    bad = (set(chosen) - set(Settings.model_fields)) | (set(defaults) - set(chosen))
    if bad:
        raise TypeError(f"{func.__name__}: {sorted(bad)} are not Settings fields that it takes")
    settings_class = with_defaults(defaults)
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
        func(settings_from_flags(given, settings_class), **mine)

    params = own + settings_parameters(chosen, settings_class)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    del command.__wrapped__  # typer must read the generated signature, not func's
    return command


def _where(field: str) -> str:
    return f"{flag_name(field)} / {env_name(field)}" if field in Settings.model_fields else field


def settings_from_flags(given: dict[str, Any], settings_class: type[Settings] = Settings) -> Settings:
    """Settings from the flags that were given (others: environment, then defaults).

    A value the Settings class refuses (e.g. ``--port 70000``, or a bad ``PREFIX_EMBED_*``
    variable) is a usage error (exit status 2) naming the setting, not a traceback.
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    overrides = {k: v for k, v in given.items() if v is not None and v != []}
    try:
        return settings_class(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_where(str(e['loc'][0])) if e['loc'] else 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise typer.BadParameter(problems) from None
    except SettingsError as exc:
        raise typer.BadParameter(str(exc)) from None
