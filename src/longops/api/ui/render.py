"""Rendering the dashboard: the Jinja2 environment, its filters, and the route class every dashboard
route uses.

Invariants: autoescaping is on for every template and no template marks data ``|safe``, so every value
from a request, a model or metadata is shown as text; the filters return plain strings (escaped on
output), never markup. Every response of a dashboard route carries ``security.SECURITY_HEADERS``, and
the dashboard's own exceptions (sign-in needed, CSRF refused, unknown id) become pages, not JSON.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from longops.api.ui.security import (
    SECURITY_HEADERS,
    CSRFRejected,
    SignInRequired,
    Viewer,
    remember_csrf,
    set_cookie,
)
from longops.domain.schemas import RequestCounts
from longops.store.jobs import JobNotFound

HERE = Path(__file__).parent
SIGN_IN_PATH = "/ui/sign-in"
FLASH_COOKIE = "longops_flash"
# The pages with a live part (``NAME_live.html``, which htmx refreshes); any other page is always whole.
LIVE_PAGES = frozenset({"overview.html", "batches.html", "batch.html", "jobs.html", "job.html"})


def _timestamp(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    x: float
    width: float
    count: int


BAR_WIDTH = 1000  # the SVG's viewBox width: segments are drawn by attributes, not inline styles (CSP)
_SEGMENTS = ("succeeded", "errored", "cancelled", "expired")


def progress_segments(counts: RequestCounts) -> list[Segment]:
    """The bar of a batch: one segment per final status, in proportion to ``request_counts.total``."""
    segments: list[Segment] = []
    x = 0.0
    for name in _SEGMENTS:
        count: int = getattr(counts, name)
        width = BAR_WIDTH * count / counts.total if counts.total else 0.0
        if count:
            segments.append(Segment(name, round(x, 2), round(width, 2), count))
        x += width
    return segments


def finished_percent(counts: RequestCounts) -> int:
    return 100 if not counts.total else (100 * (counts.total - counts.processing)) // counts.total


def query_string(**params: object) -> str:
    """``?a=1&b=2`` from the params that have a value (for links between pages)."""
    present = {name: str(value) for name, value in params.items() if value not in (None, "")}
    return "?" + urlencode(present) if present else ""


# autoescape=True for every template, whatever its name: every value is escaped on output.
templates = Jinja2Templates(env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True))
templates.env.filters["ts"] = _timestamp
templates.env.filters["pretty_json"] = _pretty_json
templates.env.globals["progress_segments"] = progress_segments
templates.env.globals["finished_percent"] = finished_percent
templates.env.globals["BAR_WIDTH"] = BAR_WIDTH
templates.env.globals["query_string"] = query_string


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def page(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    viewer: Viewer | None,
    *,
    status_code: int = 200,
    csrf_token: str | None = None,
) -> Response:
    """A whole page (``NAME.html``), or for htmx's refresh only its live part (``NAME_live.html``,
    which the page includes)."""
    token = csrf_token or (viewer.csrf_token if viewer else "")
    flash = _read_flash(request)
    values = {"viewer": viewer, "csrf_token": token, "flash": flash, "live_url": _live_url(request)}
    values.update(context)
    if is_htmx(request) and template in LIVE_PAGES:
        live = template.removesuffix(".html") + "_live.html"
        response = templates.TemplateResponse(request, live, values, status_code=status_code)
    else:
        response = templates.TemplateResponse(request, template, values, status_code=status_code)
        if flash:
            response.delete_cookie(FLASH_COOKIE, path="/ui")
    if viewer is not None and viewer.new_csrf_cookie:
        remember_csrf(request, response, viewer.csrf_token)
    response.headers["Vary"] = "HX-Request, Cookie"
    return response


def _live_url(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def back_with(request: Request, url: str, message: str) -> RedirectResponse:
    """After an action: back to ``url`` (a path of ours), showing ``message`` once. The message travels
    base64-encoded in a short-lived cookie (cookie values cannot hold every character a message can)."""
    response = RedirectResponse(url, status_code=303)
    encoded = base64.urlsafe_b64encode(message.encode()).decode()
    set_cookie(request, response, FLASH_COOKIE, encoded, max_age=60)
    return response


def _read_flash(request: Request) -> str | None:
    encoded = request.cookies.get(FLASH_COOKIE)
    if not encoded:
        return None
    try:
        return base64.urlsafe_b64decode(encoded.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def _sign_in_redirect(request: Request) -> Response:
    if is_htmx(request):  # a refresh whose session ended: the whole page goes to sign-in
        return Response(status_code=200, headers={"HX-Redirect": SIGN_IN_PATH})
    return RedirectResponse(SIGN_IN_PATH, status_code=303)


def _filter_message(exc: BadFilter | RequestValidationError) -> str:
    if isinstance(exc, BadFilter):
        return str(exc)
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "query") or "request"
    return f"{where}: {first.get('msg', 'is invalid')}"


def _error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    response: Response = templates.TemplateResponse(
        request,
        "error.html",
        {"viewer": None, "csrf_token": "", "flash": None, "title": title, "message": message},
        status_code=status_code,
    )
    return response


class BadFilter(ValueError):
    """A query parameter of a page is wrong; the message names it."""


E = TypeVar("E", bound=StrEnum)


def enum_filter(kind: type[E], value: str | None, name: str) -> E | None:
    """A status filter from the query: empty means none; anything else must be one of ``kind``."""
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        raise BadFilter(f"{name}: must be one of {', '.join(kind)}, not {value!r}") from None


class UIRoute(APIRoute):
    """A dashboard route: security headers on every answer; our exceptions as pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                response = _sign_in_redirect(request)
            except CSRFRejected:
                response = _error_page(
                    request, 403, "Refused", "The form's CSRF token is missing or stale: reload the page."
                )
            except (BadFilter, RequestValidationError) as exc:
                response = _error_page(request, 422, "Invalid filter", _filter_message(exc))
            except JobNotFound as exc:
                message = f"No such batch, job or item: {exc.args[0]}"
                response = _error_page(request, 404, "Not found", message)
            response.headers.update(SECURITY_HEADERS)
            return response

        return handle
