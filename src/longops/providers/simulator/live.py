"""The simulator's live OpenAI endpoints: ``POST /v1/chat/completions``, ``/v1/responses``,
``/v1/embeddings`` and ``/v1/completions``, what an ``openai_compatible`` provider sends to.

Each answers at once (after ``live_latency_seconds`` of ``/_simulator/config``) with the same
deterministic answer as the Batches wire (:func:`~.openai_answers.answer` of
:func:`~.openai_answers.derive_openai_item`), in the endpoint's own shape. Markers:
``[sim:error=TYPE]`` answers TYPE's HTTP status (``invalid_request_error`` 400,
``authentication_error`` 401, ``rate_limit_error`` 429, ``api_error``/``server_error`` 500,
``overloaded_error`` 503, …) in OpenAI's error envelope, ``[sim:error]`` a 503
``overloaded_error``; ``[sim:slow]`` never answers (it holds the request until the client hangs
up); ``[sim:expire]`` and ``[sim:lost]`` have no live meaning and answer normally. Faults: the
endpoint name ``live`` (``live_errors``, ``live_retry_after_seconds`` for their ``Retry-After``,
``live_delay_seconds``).

``/_simulator/stats`` gains ``live``: the calls per request (keyed by the ``X-Client-Request-Id``
header, else by a digest of the body), the seconds between the calls of each request sent more
than once (``gaps``), the requests in flight now and the peak in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from longops.providers.simulator.openai_answers import ENDPOINTS, answer, derive_openai_item
from longops.providers.simulator.state import SimApiError, SimConfig

LIVE_PATHS = ENDPOINTS
_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "server_error": 500,
    "overloaded_error": 503,
    "timeout_error": 504,
}


class LiveStats:
    def __init__(self) -> None:
        self.by_request: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0
        self._last_at: dict[str, float] = {}
        self.gaps: dict[str, list[float]] = {}  # per request sent again: seconds between its calls

    def enter(self, key: str) -> None:
        self.by_request[key] += 1
        now = time.monotonic()
        if (last := self._last_at.get(key)) is not None:
            self.gaps.setdefault(key, []).append(round(now - last, 3))
        self._last_at[key] = now
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def to_wire(self) -> dict[str, Any]:
        return {
            "calls": sum(self.by_request.values()),
            "by_request": dict(self.by_request),
            "gaps": self.gaps,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
        }


async def disconnected(request: Request) -> None:
    """Return once the client has hung up."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def live_routes(config: SimConfig, faults: Any, stats: Any) -> list[Route]:
    """The live endpoints, sharing the other wires' ``faults`` and ``stats`` (see :mod:`.app`)."""

    async def live(request: Request) -> Response:
        endpoint = request.url.path
        body = await request.body()
        key = request.headers.get("x-client-request-id") or hashlib.sha256(body).hexdigest()[:24]
        stats.count("live")
        stats.live.enter(key)
        try:
            faults.raise_error("live")
            await faults.hold("live", request)
            if config.live_latency_seconds:
                await asyncio.sleep(config.live_latency_seconds)
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise SimApiError(400, "invalid_request_error", "Request body is not valid JSON") from None
            item = derive_openai_item(key, endpoint, payload, config.error_rate)
            if item.outcome == "slow":
                await disconnected(request)
                return Response(status_code=499)
            if item.outcome == "errored":
                error_type = item.error_type or "api_error"
                raise SimApiError(_STATUS.get(error_type, 400), error_type, item.error_message or error_type)
            return Response(
                orjson.dumps(answer(endpoint, item, key, int(time.time()))), media_type="application/json"
            )
        finally:
            stats.live.leave()

    return [Route(path, live, methods=["POST"]) for path in LIVE_PATHS]
