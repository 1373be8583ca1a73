"""Ray Serve's HTTP proxy answers a request whose replica died mid-request (``RayActorError``) with
no response of its own: the client would see a bare ``500 Internal Server Error`` in plain text.
This ASGI middleware, installed in the proxy through ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``
(set by ``ray-serve`` and in the manifests of ``deploy/``), turns that into the service's JSON error.

Imports nothing from Ray: the proxy process imports it by path.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CALLBACK_PATH = "service.serving.ray_proxy:proxy_middlewares"
REPLICA_FAILED = {
    "message": "the replica serving this request failed before answering (Ray Serve restarts it); "
    "the request was not completed: retry it",
    "type": "server_error",
    "code": "replica_failed",
}


class JsonErrorWhenNoResponse:
    """A request that ends without a response (or raises before one) gets a 502 JSON error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if started:
                raise
        if not started:
            await send_json_error(send, 502, REPLICA_FAILED)


async def send_json_error(send: Send, status: int, error: dict[str, Any]) -> None:
    payload = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def proxy_middlewares() -> list[Middleware]:
    """The callback named by ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``."""
    return [Middleware(JsonErrorWhenNoResponse)]
