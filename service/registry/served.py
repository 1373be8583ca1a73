"""Served models: named, fixed sets of prefixes, configured in ``models.json`` in the prefix folder.

A consumer that stores vectors under a model name (a vector index, a feature store) needs the name
to keep meaning the same vectors: the same prefixes in the same order (so the same dimension), and
the same version of each. So a served model is configuration, never a side effect of what the
folder happens to hold: a dropped-in file joins a model only when ``models.json`` lists it, and a
member that is missing, disabled or (when pinned) at another digest makes the model *unavailable*,
with that reason, instead of silently changing its vectors.

``models.json``::

    {"version": 1,
     "default": "all-MiniLM-L6-v2",
     "models": {"all-MiniLM-L6-v2": {"description": "...",
                                     "prefixes": [{"name": "base", "digest": "..."},
                                                  {"name": "sentiment", "digest": "..."}]}}}

A member is ``{"name", "digest"}`` (pinned) or a bare name (any version); an optional ``"dim"`` is
checked against the members. Without the file the default model is ``base`` alone (or, with the
setting ``default_prefixes=enabled``, every enabled prefix: the dimension then follows the folder).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.engine.bank import PrefixBank
from service.errors import InvalidPrefixFile, shown, shown_list
from service.registry.reading import read_limited

MODELS_FILE = "models.json"
MAX_MODELS_BYTES = 256 * 1024
MAX_MODELS = 256
MAX_MEMBERS = 1024
# Model names travel in JSON bodies and /v1/models ids: printable, no spaces, bounded.
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Member:
    """One prefix of a served model: its name and, when pinned, the only digest it may have."""

    name: str
    digest: str | None = None


@dataclass(frozen=True)
class ServedModel:
    name: str
    members: tuple[Member, ...]
    description: str = ""
    dim: int | None = None  # stated dimension (checked against the members), or None

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]


@dataclass(frozen=True)
class ServedModels:
    """What ``models.json`` configures. ``error``: the file exists but cannot be used (with no last
    good version to keep serving), so every configured name is unavailable with that reason."""

    models: Mapping[str, ServedModel] = field(default_factory=dict)
    default: str | None = None
    present: bool = False
    error: str | None = None


NONE = ServedModels()


def read_served_models(folder: Path) -> ServedModels:
    """Parse ``folder/models.json``: no file -> :data:`NONE`; a bad one -> ``error`` set, nothing raised."""
    path = folder / MODELS_FILE
    try:
        raw = read_limited(path, MAX_MODELS_BYTES, MODELS_FILE, root=folder).data
    except FileNotFoundError:
        return NONE
    except InvalidPrefixFile as exc:
        return ServedModels(present=True, error=exc.message)
    except OSError as exc:
        return ServedModels(present=True, error=f"{MODELS_FILE}: cannot read: {exc.strerror or exc}")
    try:
        return parse_served_models(raw)
    except ValueError as exc:
        return ServedModels(present=True, error=f"{MODELS_FILE}: {exc}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_served_models(raw: bytes) -> ServedModels:
    """``models.json`` bytes -> :class:`ServedModels`; ``ValueError`` naming the first problem."""
    try:
        doc = json.loads(raw, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        raise ValueError('expected an object like {"version": 1, "default": NAME, "models": {NAME: {...}}}')
    if doc.get("version", 1) != 1:
        raise ValueError(f"unknown version {shown(doc.get('version'))}; this server reads version 1")
    entries = doc["models"]
    if len(entries) > MAX_MODELS:
        raise ValueError(f"{len(entries)} models, over the limit of {MAX_MODELS}")
    models = {name: _parse_model(name, body) for name, body in entries.items()}
    default = doc.get("default")
    if default is None and len(models) == 1:
        default = next(iter(models))
    if default is not None and default not in models:
        raise ValueError(f"default {shown(default)} is not one of the models ({shown_list(sorted(models))})")
    return ServedModels(models=models, default=default, present=True)


def _parse_model(name: str, body: object) -> ServedModel:
    if not MODEL_NAME_RE.fullmatch(name):
        raise ValueError(f"bad model name {shown(name)}: must match {MODEL_NAME_RE.pattern}")
    if not isinstance(body, dict) or not isinstance(body.get("prefixes"), list):
        raise ValueError(f'model {name!r}: expected {{"prefixes": [NAME or {{"name", "digest"}}, ...]}}')
    items = body["prefixes"]
    if not items or len(items) > MAX_MEMBERS:
        raise ValueError(f"model {name!r}: needs 1 to {MAX_MEMBERS} prefixes, has {len(items)}")
    members = tuple(_parse_member(name, item) for item in items)
    names = [m.name for m in members]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"model {name!r} lists {shown_list(dupes)} more than once")
    dim = body.get("dim")
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
        raise ValueError(f"model {name!r}: 'dim' must be a positive integer")
    description = body.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"model {name!r}: 'description' must be a string")
    return ServedModel(name, members, description[:1000], dim)


def _parse_member(model: str, item: object) -> Member:
    if isinstance(item, str):
        return Member(item)
    if isinstance(item, dict) and isinstance(item.get("name"), str) and set(item) <= {"name", "digest"}:
        digest = item.get("digest")
        if digest is not None and not (isinstance(digest, str) and _DIGEST_RE.fullmatch(digest)):
            raise ValueError(f"model {model!r}: prefix {item['name']!r}: digest must be 64 hex characters")
        return Member(item["name"], digest)
    raise ValueError(
        f'model {model!r}: a prefix is a name or {{"name": ..., "digest": ...}}, got {shown(item)}'
    )


def member_problems(
    members: Iterable[tuple[str, str | None]], bank: PrefixBank, enabled: Collection[str], *, pins: str
) -> list[str]:
    """Each member ``(name, digest or None)`` that is not loaded, disabled, or at another version than
    the digest it pins (``pins`` words it: "the model pins"). Served models and task heads (a head's
    inputs) alike: neither ever serves from other vectors than it names."""
    known = {p.name: p for p in bank.prefixes}
    problems: list[str] = []
    for name, digest in members:
        prefix = known.get(name)
        if prefix is None:
            problems.append(f"{name} is not loaded")
        elif name not in enabled:
            problems.append(f"{name} is disabled")
        elif digest is not None and prefix.digest != digest:
            problems.append(f"{name} is at version {prefix.digest[:12]}, {pins} {digest[:12]}")
    return problems


def unavailable_reason(model: ServedModel, bank: PrefixBank, enabled: frozenset[str], dim: int) -> str | None:
    """Why ``model`` cannot be served from this snapshot (None: it can), naming every member at fault."""
    members = ((m.name, m.digest) for m in model.members)
    problems = member_problems(members, bank, enabled, pins="the model pins")
    if model.dim is not None and model.dim != dim * len(model.members):
        problems.append(
            f"it states dim {model.dim}, its {len(model.members)} prefixes give {dim * len(model.members)}"
        )
    if not problems:
        return None
    head = "; ".join(problems[:20]) + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else "")
    return f"model {model.name!r} is unavailable: {head}"


def pinned_document(
    bank: PrefixBank,
    names: Sequence[str],
    model: str,
    *,
    existing: ServedModels = NONE,
    description: str = "",
) -> dict[str, Any]:
    """``models.json`` with ``model`` set to ``names`` at their current digests (other models kept;
    ``model`` becomes the default when there is none)."""
    pinned: dict[str, Any] = {"description": description} if description else {}
    pinned["prefixes"] = [{"name": n, "digest": bank.get(n).digest} for n in names]
    models: dict[str, Any] = {
        name: {
            **({"description": m.description} if m.description else {}),
            "prefixes": [{"name": x.name, "digest": x.digest} if x.digest else x.name for x in m.members],
            **({"dim": m.dim} if m.dim is not None else {}),
        }
        for name, m in existing.models.items()
    }
    models[model] = pinned
    return {"version": 1, "default": existing.default or model, "models": models}


__all__ = [
    "MODELS_FILE",
    "NONE",
    "Member",
    "member_problems",
    "ServedModel",
    "ServedModels",
    "parse_served_models",
    "pinned_document",
    "read_served_models",
    "unavailable_reason",
]
