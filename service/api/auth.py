"""Optional bearer-key auth: API keys for embedding routes, an admin key for routes that change prefixes.

Both are off by default (local use). Without an admin key, prefix changes need an API key when API
keys are set, so turning on API keys never leaves the admin routes open. Keys are compared in
constant time, against every configured key.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from pydantic import SecretStr

from service.api.deps import SettingsDep
from service.config import Settings
from service.errors import Forbidden, Unauthorized


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: str, keys: list[SecretStr]) -> bool:
    given = token.encode()
    found = False
    for key in keys:  # no early exit: the time taken does not say which key matched
        found |= hmac.compare_digest(given, key.get_secret_value().encode())
    return found


def _missing(token: str | None, what: str) -> Unauthorized:
    if token is None:
        return Unauthorized(f"missing API key: send 'Authorization: Bearer <{what}>'")
    return Unauthorized(f"invalid API key: the bearer token is not a valid {what}")


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    """Embedding and read routes: any API key (or the admin key) when API keys are configured.
    (``async``: a plain ``def`` dependency runs in FastAPI's thread pool, a hop per request.)"""
    _check_api_key(request, settings)


def _check_api_key(request: Request, settings: Settings) -> None:
    if not settings.api_keys:
        return
    token = _bearer(request)
    keys = [*settings.api_keys, *([settings.admin_key] if settings.admin_key else [])]
    if token is None or not _matches(token, keys):
        raise _missing(token, "API key")


async def require_admin(request: Request, settings: SettingsDep) -> None:
    """Routes that change prefixes: the admin key (or, when none is set, an API key if any are set)."""
    token = _bearer(request)
    if settings.admin_key is None:
        _check_api_key(request, settings)
        return
    if token is not None and _matches(token, [settings.admin_key]):
        return
    if token is not None and _matches(token, list(settings.api_keys)):
        raise Forbidden("this route changes prefixes and needs the admin key, not an API key")
    raise _missing(token, "admin key")
