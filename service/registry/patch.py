"""The body of ``PATCH /prefixes`` and ``PATCH /heads``: a JSON merge patch
``{name: {"enabled": bool | null}}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from service.errors import InvalidInput, shown, shown_list


def parse_patch(patch: object, kind: Literal["prefix", "head"] = "prefix") -> dict[str, bool]:
    """``{name: {"enabled": true|false|null}}`` -> {name: enabled}; null resets to the default (on).
    ``kind``: what the names are, for the messages."""
    plural = "prefixes" if kind == "prefix" else "heads"
    if not isinstance(patch, Mapping):
        raise InvalidInput(f'a {plural} patch is a JSON object like {{"sentiment": {{"enabled": false}}}}')
    changes: dict[str, bool] = {}
    for name, body in patch.items():
        which = f"{kind} {shown(name)}"
        if body is None:
            raise InvalidInput(
                f"{which}: null would delete it; use DELETE /{plural}/NAME, or remove its file from the folder"
            )
        if not isinstance(body, Mapping):
            raise InvalidInput(f'{which}: expected an object like {{"enabled": false}}')
        extra = sorted(set(body) - {"enabled"})
        if extra:
            raise InvalidInput(
                f"{which}: only 'enabled' can be changed, not {shown_list(extra, quoted=False)}"
            )
        enabled = body.get("enabled", True)
        if enabled is None:
            enabled = True
        if not isinstance(enabled, bool):
            raise InvalidInput(f"{which}: 'enabled' must be true, false or null")
        changes[str(name)] = enabled
    return changes
