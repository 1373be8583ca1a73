"""Render a response body (normalize, encode, serialize): small ones on the event loop, large ones
off it.

A thread-pool round trip costs more than rendering a few vectors (profiled at 1 text per request,
BENCHMARKS.md "Request path"), so responses of at most :data:`INLINE_NUMBERS` numbers are rendered
in place; larger ones (milliseconds and more for big batches) go to the thread pool so that the event
loop keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from service.wire.document import dumps_document

INLINE_NUMBERS = 65536
"""Largest response (vector elements) rendered on the event loop: about 1 ms of orjson."""


def _dumps(build: Callable[[], dict[str, Any]]) -> bytes:
    return dumps_document(build())


async def json_response(
    build: Callable[[], dict[str, Any]], status_code: int = 200, *, numbers: int | None = None
) -> Response:
    """``build()`` and its JSON encoding; ``numbers``: how many vector elements the body holds
    (None: unknown, rendered off the loop)."""
    if numbers is not None and numbers <= INLINE_NUMBERS:
        body = _dumps(build)
    else:
        body = await run_in_threadpool(_dumps, build)
    return Response(body, status_code=status_code, media_type="application/json")
