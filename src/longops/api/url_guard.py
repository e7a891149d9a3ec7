"""Refuse a URL that carries a NUL character (400 ``invalid_request``) before any route sees it.

No id, filter or name of ours can contain NUL, and PostgreSQL cannot even compare a text parameter
holding one (it raises instead of finding nothing), so such a request would otherwise end as a 500.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from longops.api.errors import error_response


class URLGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query: bytes = scope.get("query_string", b"")
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                response = error_response(400, "invalid_request", "the URL contains a NUL character (%00)")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
