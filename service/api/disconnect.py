"""Drop the work of a request whose client has gone away.

uvicorn does not cancel a route when its client disconnects; the route would keep its place in
the batcher's queue and spend a forward call on an answer nobody reads. :func:`cancel_on_disconnect`
races the work against the ``http.disconnect`` message and cancels the work (the batcher then
skips it) when the client leaves first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from service.errors import PrefixEmbedError

T = TypeVar("T")


class ClientDisconnected(PrefixEmbedError):
    """Nobody reads this answer; the status is for logs and metrics (nginx's 499)."""

    status_code = 499
    type = "invalid_request_error"
    code = "client_closed_request"


async def _disconnected(request: Request) -> None:
    # The body has been read already: the next message is http.disconnect, sent when the client
    # closes the connection (or, at the latest, once the response is complete).
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # a server that cannot tell us: never report a disconnect
        await asyncio.get_running_loop().create_future()


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """``await work``, unless the client disconnects first: then cancel it and raise
    :class:`ClientDisconnected`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the route itself is cancelled: so is its work
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientDisconnected("the client closed the connection before the answer was ready")
