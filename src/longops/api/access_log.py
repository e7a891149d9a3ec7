"""One line per request on the ``longops.access`` logger (INFO): client, method, path, status, duration.

It replaces uvicorn's own access line (``ACCESS_LOG=true``, the default; ``server.serve`` turns
uvicorn's off), which cost about twice as much: 12–13 % of the event loop's samples for a
``GET /v1/batches/{id}`` on SQLite (bench/api_reads.py), against 8–9 % for this one (about 20 and
10 µs per line alone). uvicorn's formatter copies every record and colours it, and the record itself
walks the stack for a caller that is always the same line of uvicorn. This one builds its record
directly (no caller lookup) and goes through the ordinary handlers of the root logger, so it looks
like, and is configured like, every other line, and it adds the duration::

    2026-11-29 10:21:55,976 INFO longops.access: 127.0.0.1:53124 - "GET /v1/batches/job_… HTTP/1.1" 200 1.3ms

The duration runs from the request reaching the application to the end of its response (for a
streamed response, its last chunk). The path and query are written as the client sent them
(percent-encoded; any other byte escaped), so a request cannot forge or split log lines, except
that the value of a query parameter named like a secret (``key``, ``token``, ``api_key``…, see
:mod:`longops.domain.redaction`) is written ``REDACTED``. A request
that fails with an unhandled exception is logged as 500, the answer it gets.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from longops.domain.redaction import redact_query

log = logging.getLogger("longops.access")

_FORMAT = '%s - "%s %s HTTP/%s" %d %.1fms'


def _target(scope: Scope) -> str:
    """The request target as sent: ``raw_path`` (percent-encoded as received) and the query string."""
    raw: bytes | None = scope.get("raw_path")
    path = raw.decode("ascii", "backslashreplace") if raw is not None else quote(scope["path"])
    query: bytes = scope.get("query_string", b"")
    return f"{path}?{redact_query(query.decode('ascii', 'backslashreplace'))}" if query else path


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            args = (
                _client(scope),
                scope["method"],
                _target(scope),
                scope.get("http_version", "1.0"),  # optional in ASGI, 1.0 when absent
                status,
                1000 * (time.perf_counter() - started),
            )
            log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, _FORMAT, args, None))
