"""The error responses each route documents in the OpenAPI schema (one body for all of them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str


class ErrorBody(BaseModel):
    """Every error: ``{"error": {"message", "type", "code"}}``."""

    error: ErrorDetail


_WHY = {
    400: "Invalid input (the message names it), or a body that is not readable JSON",
    401: "Missing or invalid API key",
    403: "An API key on a route that needs the admin key",
    404: "Unknown prefix, head or model",
    409: "Prefix or head disabled, head unavailable (an input prefix missing, disabled or changed), nothing "
    "enabled, or a name served from another entry",
    413: "Request body, batch or input over its limit (the message names the setting)",
    422: "Request or prefix file does not validate",
    429: "Queue full; retry after the Retry-After header",
    503: "Not ready (model loading or shutting down), or the prefix folder is not writable",
    504: "No answer within the request deadline",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or router: each code with the shared error body."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in codes}


# Routes that embed (and so may queue) text.
EMBED_ERRORS = error_responses(400, 401, 404, 409, 413, 422, 429, 503, 504)
# Routes that change prefixes.
ADMIN_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 503)
# Routes that read the serving state.
READ_ERRORS = error_responses(401, 503)


def upload_body(description: str) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body is a file (``PUT /prefixes/{name}``, ``PUT /heads/{name}``)."""
    binary = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    return {"requestBody": {"required": True, "description": description, "content": binary}}
