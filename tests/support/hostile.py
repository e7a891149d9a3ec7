"""A hostile provider on loopback: the bundled simulator behind a proxy that corrupts what it says.

The proxy forwards every Anthropic Message Batches call to a real simulator and answers with the
simulator's answer, except where :class:`Hostility` says otherwise: the lines of a results body
rewritten (broken JSON, NUL, invalid UTF-8, cut lines), results answered with an error status, or
``results_url`` pointing at another origin. It records the headers of every results request, so a
test can see which credentials reached which host.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import _bound_socket


@dataclass
class Hostility:
    rewrite_results: Callable[[list[bytes]], list[bytes]] | None = None  # the body's lines, with ends
    results_status: int | None = None  # answer every results request with this error status
    results_origin: str | None = None  # where results_url points (default: this proxy)
    results_headers: list[dict[str, str]] = field(default_factory=list)  # per results request, by origin
    results_hosts: list[str] = field(default_factory=list)


def _proxy(upstream: str, hostility: Hostility, client: httpx.AsyncClient) -> Starlette:
    async def results(request: Request) -> Response:
        hostility.results_headers.append(dict(request.headers))
        hostility.results_hosts.append(request.url.netloc)
        if hostility.results_status is not None:
            error = {"type": "error", "error": {"type": "not_found_error", "message": "no such results"}}
            return JSONResponse(error, status_code=hostility.results_status)
        answer = await client.get(upstream + request.url.path)
        lines = answer.content.splitlines(keepends=True)
        if hostility.rewrite_results is not None:
            lines = hostility.rewrite_results(lines)
        return Response(b"".join(lines), status_code=answer.status_code, media_type="application/x-jsonl")

    async def forward(request: Request) -> Response:
        answer = await client.request(
            request.method,
            upstream + request.url.path,
            params=request.query_params,
            content=await request.body(),
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
        body = answer.content
        if answer.headers.get("content-type", "").startswith("application/json"):
            data = orjson.loads(body)
            if isinstance(data, dict) and data.get("results_url"):
                origin = hostility.results_origin or str(request.base_url).rstrip("/")
                data["results_url"] = origin + httpx.URL(data["results_url"]).path
            body = orjson.dumps(data)
        return Response(body, status_code=answer.status_code, media_type="application/json")

    methods = ["GET", "POST", "DELETE"]
    return Starlette(
        routes=[
            Route("/v1/messages/batches/{batch_id}/results", results, methods=["GET"]),
            Route("/{path:path}", forward, methods=methods),
        ]
    )


@contextlib.asynccontextmanager
async def serve_asgi(app: Starlette) -> AsyncIterator[str]:
    """Serve an ASGI app in the current event loop; yields its base URL."""
    sock = _bound_socket()
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@contextlib.asynccontextmanager
async def hostile_provider(upstream: str, hostility: Hostility) -> AsyncIterator[str]:
    """The proxy in front of ``upstream`` (a simulator's URL); yields the proxy's URL."""
    async with (
        httpx.AsyncClient(timeout=30) as client,
        serve_asgi(_proxy(upstream, hostility, client)) as url,
    ):
        yield url
