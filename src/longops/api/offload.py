"""Large request bodies are decoded and validated off the event loop.

A ``POST /v1/batches`` of 36 MB costs seconds of CPU to decode and validate (on a slow machine
2 s for ``json.loads``, 1.6 s for :func:`longops.domain.requests.parse_requests`, which walks and
re-encodes every request). On the event loop that is as long a silence for every other request of
every organization. So:

* a body of at least ``OFFLOAD_BYTES`` is decoded in slices (:func:`decode_in_slices`): the
  elements of its top-level arrays one by one with the standard decoder (``raw_decode``), the event
  loop served between slices of ``SLICE_CHARS`` characters. A worker thread would not do for this:
  the C decoder holds the interpreter for the whole document. The result is the one ``json.loads``
  gives (same decoder, same values; a malformed document raises the same ``JSONDecodeError``).
* a request list of at least ``OFFLOAD_REQUESTS`` is validated in a worker thread (:func:`off_loop`):
  pure Python, which shares the interpreter with the loop, which gets its turn every few
  milliseconds. Worker threads are the default executor's (bounded).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

OFFLOAD_BYTES = 1024 * 1024
OFFLOAD_REQUESTS = 1000

P = ParamSpec("P")
T = TypeVar("T")


SLICE_CHARS = 256 * 1024
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match is not None else at


def _expect(text: str, at: int, char: str, what: str) -> int:
    if text[at : at + 1] != char:
        raise json.JSONDecodeError(f"Expecting {what}", text, at)
    return at + 1


async def decode_in_slices(body: bytes) -> Any:
    """``json.loads(body)``, yielding to the event loop between slices (see the module docstring)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return json.loads(body)  # another encoding: json's own detection, in one piece
    at = _skip(text, 0)
    if text[at : at + 1] != "{":
        return json.loads(text)
    result: dict[str, Any] = {}
    at = _skip(text, at + 1)
    if text[at : at + 1] == "}":
        at += 1
    else:
        while True:
            if text[at : at + 1] != '"':
                raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, at)
            key, at = _DECODER.raw_decode(text, at)
            at = _skip(text, _expect(text, _skip(text, at), ":", "':' delimiter"))
            if text[at : at + 1] == "[":
                result[key], at = await _array(text, at)
            else:
                result[key], at = _DECODER.raw_decode(text, at)
            at = _skip(text, at)
            if text[at : at + 1] == ",":
                at = _skip(text, at + 1)
                continue
            at = _expect(text, at, "}", "',' delimiter")
            break
    if _skip(text, at) != len(text):
        raise json.JSONDecodeError("Extra data", text, _skip(text, at))
    return result


async def _array(text: str, at: int) -> tuple[list[Any], int]:
    """The array starting at ``text[at] == "["``, element by element; the position after it."""
    values: list[Any] = []
    at = _skip(text, at + 1)
    if text[at : at + 1] == "]":
        return values, at + 1
    mark = at
    while True:
        value, at = _DECODER.raw_decode(text, at)
        values.append(value)
        if at - mark >= SLICE_CHARS:
            await asyncio.sleep(0)  # let the event loop serve others
            mark = at
        at = _skip(text, at)
        if text[at : at + 1] == ",":
            at = _skip(text, at + 1)
            continue
        return values, _expect(text, at, "]", "',' delimiter")


class _OffloadedJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await decode_in_slices(body) if len(body) >= OFFLOAD_BYTES else json.loads(body)
        return self._json


class OffloadingRoute(APIRoute):
    """An APIRoute whose JSON body, when large, is decoded in slices (:func:`decode_in_slices`)."""

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
