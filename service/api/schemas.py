"""Request bodies of the embedding routes, and the checks on their contents that depend on settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from service.errors import InvalidInput, TooManyInputs, shown_list
from service.wire import Combine, Encoding

# Most prefix names one request may list. Far above any real bank (each name is one row per text),
# and it keeps a hostile list from costing more than a bounded, linear check.
MAX_REQUEST_PREFIXES = 1024


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check_unicode(text: str, what: str) -> None:
    """JSON may carry a lone surrogate (``"\ud800"``): not text, and the tokenizer would fail on it."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.start + 1]
        raise ValueError(
            f"{what} holds a lone surrogate {bad!r} at character {exc.start}: not valid Unicode text"
        ) from None


def check_text_inputs(value: Any) -> Any:
    """A string or a list of strings; say precisely what else was sent (token ids are not accepted)."""
    if isinstance(value, str):
        _check_unicode(value, "the input")
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                hint = (
                    " (token id arrays are not supported: send text)" if isinstance(item, int | list) else ""
                )
                raise ValueError(f"item {i} is {_json_kind(item)}, not a string{hint}")
            _check_unicode(item, f"item {i}")
        return value
    raise ValueError(f"must be a string or a list of strings, not {_json_kind(value)}")


def check_name_count(value: Any) -> Any:
    """Checked before the items are validated: a 40,000-name list is refused at its length."""
    if isinstance(value, list) and len(value) > MAX_REQUEST_PREFIXES:
        raise ValueError(
            f"lists {len(value)} names, over the limit of {MAX_REQUEST_PREFIXES} per request "
            "(MAX_REQUEST_PREFIXES)"
        )
    return value


class EmbedRequest(BaseModel):
    """``POST /embed``."""

    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(description="One text or a list of texts.")
    prefixes: list[str] | None = Field(
        None, description="Prefix names, in output order; null = every enabled prefix."
    )
    combine: Combine = "separate"
    normalize: StrictBool = True
    truncate: StrictBool = True
    encoding: Encoding = "float"

    _inputs = field_validator("inputs", mode="before")(check_text_inputs)
    _prefixes = field_validator("prefixes", mode="before")(check_name_count)


class PredictRequest(BaseModel):
    """``POST /predict``."""

    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(description="One text or a list of texts.")
    tasks: list[str] | None = Field(
        None, description="Head names (heads/NAME.safetensors), in output order; null = every available head."
    )
    truncate: StrictBool = True

    _inputs = field_validator("inputs", mode="before")(check_text_inputs)
    _tasks = field_validator("tasks", mode="before")(check_name_count)


class OpenAIEmbeddingRequest(BaseModel):
    """``POST /v1/embeddings`` (OpenAI-compatible; unknown fields such as ``user`` are ignored)."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str]
    model: str = Field(
        description="A prefix name, or the served model name for the concat of enabled prefixes."
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    _input = field_validator("input", mode="before")(check_text_inputs)


def texts_of(inputs: str | list[str], max_inputs: int, field: str = "inputs") -> list[str]:
    """The request's texts, or a 4xx naming what is wrong and the limit."""
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not texts:
        raise InvalidInput(f"{field} is an empty list; send at least one string")
    if len(texts) > max_inputs:
        raise TooManyInputs(
            f"{field} has {len(texts)} items, over the limit of {max_inputs} per request (max_client_batch)"
        )
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        which = (
            f"{field} is an empty string"
            if isinstance(inputs, str)
            else f"{field}: item(s) {', '.join(map(str, empty[:10]))} are empty strings"
        )
        raise InvalidInput(f"{which}; every input needs some text")
    return texts


def check_prefix_list(
    prefixes: Sequence[str] | None, field: str = "prefixes", every: str = "every enabled prefix"
) -> list[str] | None:
    """A list of names (``prefixes`` of /embed, ``tasks`` of /predict): null, or non-empty without repeats."""
    if prefixes is None:
        return None
    if not prefixes:
        raise InvalidInput(f"{field} is an empty list; send null (or omit it) for {every}")
    seen: set[str] = set()
    dupes: set[str] = set()
    for p in prefixes:  # linear: one pass with a set
        if p in seen:
            dupes.add(p)
        seen.add(p)
    if dupes:
        raise InvalidInput(f"{field} lists {shown_list(sorted(dupes))} more than once")
    return list(prefixes)
