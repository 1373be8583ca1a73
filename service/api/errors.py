"""One error format for every failure: ``{"error": {"message", "type", "code"}}``.

Domain errors (``service.errors``) carry their status and a client-safe message; validation errors
become readable 400/422s; anything unexpected is logged and answered with a generic 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import MAX_LISTED, PrefixEmbedError, shown

log = logging.getLogger(__name__)

_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


# Longest error message sent. Lists in messages are already cut to MAX_LISTED names (service.errors);
# this is the last guard, so that no input can make an error body of many kilobytes.
MAX_MESSAGE_CHARS = 2000


def error_response(
    status: int, message: str, type_: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    if len(message) > MAX_MESSAGE_CHARS:
        message = f"{message[: MAX_MESSAGE_CHARS - 40]}... (message cut at {MAX_MESSAGE_CHARS} characters)"
    body = {"error": {"message": message, "type": type_, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


async def domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PrefixEmbedError)
    headers = dict(exc.headers)  # e.g. Retry-After of a 429
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(exc.status_code, exc.message, exc.type, exc.code, headers or None)


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in err.get("loc", ()) if part != "body") or "body"
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "missing":
        if loc == "body":
            return "the request body is empty; send a JSON object (Content-Type: application/json)"
        return f"{loc}: required field is missing"
    if kind == "extra_forbidden":
        return f"unknown field {loc!r}"
    if loc == "body" and kind in ("model_attributes_type", "dict_type"):
        return "the request body must be a JSON object (Content-Type: application/json)"
    if kind in ("literal_error", "enum", "bool_type", "int_type", "string_type", "list_type"):
        return f"{loc}: {msg} (got {shown(err.get('input'))})"
    return f"{loc}: {msg}"


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        where = bad_json.get("loc", ("body", "?"))[-1]
        detail = (bad_json.get("ctx") or {}).get("error", "JSON decode error")
        return error_response(
            400, f"malformed JSON at position {where}: {detail}", "invalid_request_error", "malformed_json"
        )
    seen: list[str] = []
    for e in errors:
        text = _describe(e)
        if text not in seen:
            seen.append(text)
    more = f" (and {len(seen) - MAX_LISTED} more)" if len(seen) > MAX_LISTED else ""
    return error_response(
        422, "; ".join(seen[:MAX_LISTED]) + more, "invalid_request_error", "validation_error"
    )


def _path(request: Request, limit: int = 200) -> str:
    path = request.url.path
    return path if len(path) <= limit else path[:limit] + "..."


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = str(exc.detail)
    if status == 400 and message == "There was an error parsing the body":
        # FastAPI's answer when json.loads fails other than by a syntax error
        message = (
            "the request body could not be read as JSON: it must be UTF-8 text, nested at most a "
            "few hundred levels deep, with numbers of at most 4300 digits"
        )
        return error_response(400, message, "invalid_request_error", "malformed_json")
    if status == 404:
        message = f"no route {request.method} {_path(request)}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {_path(request)}"
    type_ = _HTTP_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    code = _HTTP_CODES.get(status, "http_error")
    return error_response(status, message, type_, code, dict(exc.headers or {}) or None)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Details go to the log only: exception text can hold paths, inputs or internals.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error", "server_error", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PrefixEmbedError, domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
