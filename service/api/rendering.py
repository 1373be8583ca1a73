"""Run the response rendering (normalize, encode, serialize) off the event loop."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool


def _dumps(build: Callable[[], dict[str, Any]]) -> bytes:
    return json.dumps(build(), separators=(",", ":"), allow_nan=False).encode()


async def json_response(build: Callable[[], dict[str, Any]], status_code: int = 200) -> Response:
    """``build()`` and its JSON encoding can take tens of ms for large batches: not on the loop."""
    body = await run_in_threadpool(_dumps, build)
    return Response(body, status_code=status_code, media_type="application/json")
