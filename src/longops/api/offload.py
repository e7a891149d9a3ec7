"""Large request bodies are decoded and validated off the event loop.

A ``POST /v1/batches`` of tens of megabytes costs about a second of CPU to decode and validate
(``json.loads``, then :func:`longops.domain.requests.parse_requests`, which walks and re-encodes
every request). On the event loop that second is a second of silence for every other request of
every organization. Bodies of at least ``OFFLOAD_BYTES`` are therefore decoded in a worker thread
(:class:`OffloadingRoute`), and request lists of at least ``OFFLOAD_REQUESTS`` validated in one
(:func:`off_loop`). The pure-Python validation then shares the interpreter with the loop, which gets
its turn every few milliseconds; the C decoder holds the interpreter while it runs, so what it
costs on the loop is bounded by ``MAX_REQUEST_BYTES`` (about 0.1 s per 10 MB on the development
machine) rather than removed. Worker threads are the default executor's (bounded).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

OFFLOAD_BYTES = 1024 * 1024
OFFLOAD_REQUESTS = 1000

P = ParamSpec("P")
T = TypeVar("T")


class _OffloadedJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = (
                await asyncio.to_thread(json.loads, body) if len(body) >= OFFLOAD_BYTES else json.loads(body)
            )
        return self._json


class OffloadingRoute(APIRoute):
    """An APIRoute whose JSON body, when large, is decoded in a worker thread."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_OffloadedJSONRequest(request.scope, request.receive))

        return route


async def off_loop(size: int, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``, in a worker thread when ``size`` (requests) is large."""
    if size >= OFFLOAD_REQUESTS:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)
