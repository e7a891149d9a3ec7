"""The simulator's HTTP surface: the Anthropic Message Batches API plus ``/_simulator`` controls.

Faults are queued per endpoint (``create``, ``retrieve``, ``list``, ``cancel``, ``results``, the
OpenAI wire's ``upload`` and ``delete``, ``live`` for the live endpoints of :mod:`.live`) and each
one is used by exactly one later call, in order, so a test states precisely which call fails
(``{endpoint}_retry_after_seconds`` gives that spec's errors a ``Retry-After`` header).
An error fault answers without acting; ``create_applied_errors`` creates the batch and then answers
the error (a 5xx after the fact, for reconciliation tests); a delay holds the answer after acting,
until the delay passes or the client hangs up (a client-side timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from longops.providers.simulator.live import LIVE_PATHS, LiveStats, disconnected, live_routes
from longops.providers.simulator.openai_wire import OpenAIState, openai_error, openai_routes
from longops.providers.simulator.state import SimApiError, SimulatorState, parse_create_body

ENDPOINTS = ("create", "retrieve", "list", "cancel", "results", "upload", "delete", "live")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_CHUNK_BYTES = 64 * 1024


class SimulatedCut(Exception):
    """Raised inside a results stream to break the connection mid-body."""


class Faults:
    """Queued faults, each consumed by one call. See the module docstring and ``POST /_simulator/faults``."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.errors: dict[str, list[int]] = defaultdict(list)
        self.retry_after: dict[str, list[float | None]] = defaultdict(list)  # beside each error
        self.delays: dict[str, list[float]] = defaultdict(list)
        self.create_applied_errors: list[int] = []
        self.results_cuts: list[int] = []

    def add(self, spec: dict[str, Any]) -> None:
        """Validate the whole spec first, so a bad one queues nothing."""
        suffixes = ("errors", "retry_after_seconds", "delay_seconds", "delay_count")
        known = {f"{e}_{suffix}" for e in ENDPOINTS for suffix in suffixes}
        known |= {"create_applied_errors", "results_cut_after_lines", "results_cut_count"}
        unknown = set(spec) - known
        if unknown:
            raise SimApiError(400, "invalid_request_error", f"unknown fault(s): {', '.join(sorted(unknown))}")
        errors = {endpoint: _status_list(spec, f"{endpoint}_errors") for endpoint in ENDPOINTS}
        after = {
            endpoint: _number(spec, f"{endpoint}_retry_after_seconds")
            for endpoint in ENDPOINTS
            if f"{endpoint}_retry_after_seconds" in spec
        }
        delays = {
            endpoint: [_number(spec, f"{endpoint}_delay_seconds")]
            * int(_number(spec, f"{endpoint}_delay_count", 1))
            for endpoint in ENDPOINTS
            if f"{endpoint}_delay_seconds" in spec
        }
        applied = _status_list(spec, "create_applied_errors")
        cuts = []
        if "results_cut_after_lines" in spec:
            lines = int(_number(spec, "results_cut_after_lines"))
            cuts = [lines] * int(_number(spec, "results_cut_count", 1))
        for endpoint in ENDPOINTS:
            self.errors[endpoint] += errors[endpoint]
            self.retry_after[endpoint] += [after.get(endpoint)] * len(errors[endpoint])
            self.delays[endpoint] += delays.get(endpoint, [])
        self.create_applied_errors += applied
        self.results_cuts += cuts

    def pending(self) -> dict[str, Any]:
        return {
            "errors": {k: v for k, v in self.errors.items() if v},
            "delays": {k: v for k, v in self.delays.items() if v},
            "create_applied_errors": self.create_applied_errors,
            "results_cuts": self.results_cuts,
        }

    def raise_error(self, endpoint: str, queue: list[int] | None = None) -> None:
        after = None
        if queue is None:
            queue = self.errors[endpoint]
            after = self.retry_after[endpoint].pop(0) if queue else None
        if queue:
            status = queue.pop(0)
            error_type = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
            message = f"Simulated {error_type} (HTTP {status}) on {endpoint}"
            raise SimApiError(status, error_type, message, retry_after=after)

    async def hold(self, endpoint: str, request: Request) -> None:
        """Hold the answer for a queued delay, ending early when the client hangs up."""
        if self.delays[endpoint]:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(disconnected(request), self.delays[endpoint].pop(0))


def _number(spec: dict[str, Any], key: str, default: float | None = None) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SimApiError(400, "invalid_request_error", f"{key}: must be a number >= 0")
    return float(value)


def _status_list(spec: dict[str, Any], key: str) -> list[int]:
    value = spec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, int) and 400 <= v <= 599 for v in value):
        raise SimApiError(400, "invalid_request_error", f"{key}: must be a list of HTTP statuses 400-599")
    return value


class Stats:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter({endpoint: 0 for endpoint in ENDPOINTS})
        self.by_batch: dict[str, Counter[str]] = defaultdict(Counter)
        self.live = LiveStats()

    def count(self, endpoint: str, batch_id: str | None = None) -> None:
        self.calls[endpoint] += 1
        if batch_id is not None:
            self.by_batch[batch_id][endpoint] += 1


def _with_retry_after(response: Response, exc: SimApiError) -> Response:
    if exc.retry_after is not None:
        response.headers["Retry-After"] = f"{exc.retry_after:g}"
    return response


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")),
        status_code=status_code,
        media_type="application/json",
        headers={"request-id": f"req_sim_{secrets.token_hex(12)}"},
    )


def _error(status_code: int, error_type: str, message: str) -> Response:
    return _json({"type": "error", "error": {"type": error_type, "message": message}}, status_code)


async def _body_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise SimApiError(400, "invalid_request_error", "Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise SimApiError(400, "invalid_request_error", "Request body must be a JSON object")
    return body


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _stream(lines: Iterator[bytes], cut_after: int | None) -> AsyncIterator[bytes]:
    """Group lines into chunks; with ``cut_after``, send that many lines and break the connection.

    Lines are generated on the event loop, one chunk (about 64 KiB, well under a millisecond) between
    two sends: a thread hop per chunk cost more than the generation itself.
    """
    if cut_after is not None:
        head = [line for _, line in zip(range(cut_after), lines, strict=False)]
        if head:
            yield b"".join(head)
        raise SimulatedCut(f"results stream cut after {len(head)} line(s)")
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        chunk.append(line)
        size += len(line)
        if size >= _CHUNK_BYTES:
            yield b"".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield b"".join(chunk)


def _is_openai(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/v1/files", "/v1/batches", *LIVE_PATHS))


def create_app(state: SimulatorState, openai_state: OpenAIState | None = None) -> Starlette:
    """Both wires on one app; the OpenAI wire's state defaults to one in memory with the same knobs."""
    faults, stats = Faults(), Stats()
    if openai_state is None:
        openai_state = OpenAIState(state.config)

    async def create(request: Request) -> Response:
        body = await request.body()  # read even when failing, so the client is not cut off mid-send
        # Counted once the body is whole: a client that dies mid-send (the body is streamed) has not
        # made a create the provider could act on, and nothing is created.
        stats.count("create")
        faults.raise_error("create")
        items = await anyio.to_thread.run_sync(parse_create_body, body, state.config.error_rate)
        batch = await anyio.to_thread.run_sync(state.create, items)
        faults.raise_error("create", faults.create_applied_errors)
        await faults.hold("create", request)
        return _json(batch.to_wire(state.clock(), _base_url(request), status="in_progress"))

    async def retrieve(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        stats.count("retrieve", batch_id)
        faults.raise_error("retrieve")
        wire = state.get(batch_id).to_wire(state.clock(), _base_url(request))
        await faults.hold("retrieve", request)
        return _json(wire)

    async def list_batches(request: Request) -> Response:
        stats.count("list")
        faults.raise_error("list")
        try:
            limit = int(request.query_params.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            raise SimApiError(400, "invalid_request_error", "limit: Input should be between 1 and 1000")
        batches, has_more = state.page(
            limit=limit,
            before_id=request.query_params.get("before_id"),
            after_id=request.query_params.get("after_id"),
        )
        now, base_url = state.clock(), _base_url(request)
        data = [batch.to_wire(now, base_url) for batch in batches]
        await faults.hold("list", request)
        return _json(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def cancel(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        stats.count("cancel", batch_id)
        faults.raise_error("cancel")
        batch = state.cancel(batch_id)
        await faults.hold("cancel", request)
        return _json(batch.to_wire(state.clock(), _base_url(request), status="canceling"))

    async def results(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        stats.count("results", batch_id)
        faults.raise_error("results")
        lines = state.results(batch_id)
        await faults.hold("results", request)
        cut_after = faults.results_cuts.pop(0) if faults.results_cuts else None
        return StreamingResponse(_stream(lines, cut_after), media_type="application/x-jsonl")

    async def get_stats(request: Request) -> Response:
        return _json(
            {
                "calls": dict(stats.calls),
                "by_batch": {batch_id: dict(counts) for batch_id, counts in stats.by_batch.items()},
                "batches": len(state) + len(openai_state.batches),
                "live": stats.live.to_wire(),
            }
        )

    async def add_faults(request: Request) -> Response:
        faults.add(await _body_object(request))
        return _json(faults.pending())

    async def get_faults(request: Request) -> Response:
        return _json(faults.pending())

    async def clear_faults(request: Request) -> Response:
        faults.clear()
        return _json(faults.pending())

    async def config(request: Request) -> Response:
        if request.method == "POST":
            state.config.update(await _body_object(request))
        return _json(asdict(state.config))

    async def finish(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        if batch_id in openai_state.batches:
            return _json(openai_state.to_wire(openai_state.finish(batch_id)))
        batch = state.finish(batch_id)
        return _json(batch.to_wire(state.clock(), _base_url(request)))

    async def on_sim_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SimApiError)
        if _is_openai(request):
            return _with_retry_after(openai_error(exc.status_code, exc.error_type, exc.message), exc)
        return _with_retry_after(_error(exc.status_code, exc.error_type, exc.message), exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(exc.status_code, error_type, f"{request.method} {request.url.path}: {exc.detail}")

    batches = "/v1/messages/batches"
    return Starlette(
        routes=[
            Route(batches, create, methods=["POST"]),
            Route(batches, list_batches, methods=["GET"]),
            Route(batches + "/{batch_id}", retrieve, methods=["GET"]),
            Route(batches + "/{batch_id}/cancel", cancel, methods=["POST"]),
            Route(batches + "/{batch_id}/results", results, methods=["GET"]),
            *openai_routes(openai_state, faults, stats, _stream),
            *live_routes(state.config, faults, stats),
            Route("/_simulator/stats", get_stats, methods=["GET"]),
            Route("/_simulator/faults", add_faults, methods=["POST"]),
            Route("/_simulator/faults", get_faults, methods=["GET"]),
            Route("/_simulator/faults", clear_faults, methods=["DELETE"]),
            Route("/_simulator/config", config, methods=["GET", "POST"]),
            Route("/_simulator/batches/{batch_id}/finish", finish, methods=["POST"]),
        ],
        exception_handlers={SimApiError: on_sim_error, HTTPException: on_http_error},
    )
