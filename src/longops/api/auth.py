"""Who is calling: ``Authorization: Bearer lo_…`` on every request, or open mode on loopback.

Every path except :data:`PUBLIC_PATHS` (health, readiness, metrics and the API's own description)
and the dashboard under :data:`SELF_AUTHENTICATED_PREFIX` (which checks its own session cookie, see
``longops.api.ui.security``) needs an active key; the key's organization is put in the request
scope, and ``deps.caller_org`` hands it to the routes, which scope every query to it. A missing,
malformed, unknown or revoked key gets the same 401 ``authentication_error`` with the same message,
so an answer never tells which.

This is plain ASGI middleware rather than a FastAPI dependency because FastAPI reads and parses a
request's JSON body before it resolves dependencies: here an unauthenticated caller is turned away
before a byte of its body is read, and unknown paths answer 401 too (nothing to probe without a key).

The key is looked up on every request (one query on a unique index, see ``store.api_keys``), with no
cache: a revoked key fails on the very next request, from any instance.

Open mode: while *no key has ever been created* and the server is bound to a loopback address,
requests without an ``Authorization`` header act as organization ``default``. Whether the bind
address allows it is decided once, at startup (:class:`OpenMode`); whether a key exists is checked on
each keyless request until one is found, after which open mode is over for the life of the process
(keys are never deleted, so it could not come back anyway). A request that does send a key is always
authenticated, open mode or not.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from longops.api.errors import error_response
from longops.store.api_keys import any_key_exists, org_for_key
from longops.store.db import Database

DEFAULT_ORG = "default"
ORG_SCOPE_KEY = "longops.org"
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
SELF_AUTHENTICATED_PREFIX = "/ui"
AUTH_MESSAGE = (
    "a valid API key is required: send the header `Authorization: Bearer <key>` "
    "(keys are created with `longops keys create --org NAME`)"
)


def is_loopback_host(host: str) -> bool:
    """True when every address ``host`` stands for is a loopback address (``127.0.0.1``, ``::1``, …)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


@dataclass
class OpenMode:
    """Whether requests without a key may act as :data:`DEFAULT_ORG` (see the module docstring)."""

    allowed: bool  # the server is bound to a loopback address
    ended: bool = False  # a key was seen to exist

    async def applies(self, db: Database) -> bool:
        if not self.allowed or self.ended:
            return False
        if await any_key_exists(db):
            self.ended = True
            return False
        return True


class _AuthState(Protocol):
    db: Database
    open_mode: OpenMode


def _bearer_token(scope: Scope) -> str | None:
    """The token of the one ``Authorization: Bearer`` header; "" when malformed, None when absent."""
    values: list[bytes] = [value for name, value in scope.get("headers", []) if name == b"authorization"]
    if not values:
        return None
    scheme, _, token = values[0].decode("latin-1").partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer":
        return ""
    return token.strip()


def _is_dashboard(path: str) -> bool:
    return path == SELF_AUTHENTICATED_PREFIX or path.startswith(SELF_AUTHENTICATED_PREFIX + "/")


class AuthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or _is_dashboard(scope["path"]):
            await self.app(scope, receive, send)
            return
        state: _AuthState = scope["app"].state.longops
        token = _bearer_token(scope)
        if token is None:
            org = DEFAULT_ORG if await state.open_mode.applies(state.db) else None
        else:
            org = await org_for_key(state.db, token)
        if org is None:
            response = error_response(401, "authentication_error", AUTH_MESSAGE)
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        scope[ORG_SCOPE_KEY] = org
        await self.app(scope, receive, send)


def describe_bearer_auth(app: FastAPI) -> None:
    """Declare the key in the app's OpenAPI description: every operation outside :data:`PUBLIC_PATHS`
    requires it (what the middleware enforces), so generated clients and ``/docs`` know to send it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        first = app.openapi_schema is None
        schema = build()  # cached by FastAPI after the first call, with the changes below
        if first:
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a key from `longops keys create`",
                }
            }
            for path, item in schema["paths"].items():
                if path not in PUBLIC_PATHS:
                    for operation in item.values():
                        operation["security"] = [{"apiKey": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
