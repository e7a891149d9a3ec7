"""Who is looking at the dashboard, and the rules every dashboard request obeys.

* **Viewer.** A request is either signed in (a ``longops_session`` cookie naming a live session, see
  ``store.ui_sessions``), or in open mode (the API's own :class:`~longops.api.auth.OpenMode`: no key
  ever created and a loopback bind), or neither, and then it is sent to the sign-in page. The
  organization comes from the session's key, and is put in the request scope exactly where the API's
  auth middleware puts it, so the API's route functions called by the dashboard scope it the same way.
* **Cookies.** The session cookie holds a random token only (never the key): ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/ui``, and ``Secure`` when the request came over HTTPS.
* **CSRF.** Every form carries ``csrf_token``; a POST whose token is missing or wrong is refused with
  403 before it does anything. Signed in, the token is the session's own (stored with it); without a
  session (the sign-in form, open mode) it is the random ``longops_csrf`` cookie, sent back in the form
  (double submit). SameSite=Strict already keeps other sites' forms from carrying our cookies; the
  token is the second lock.
* **Headers.** Every response carries a Content-Security-Policy that allows scripts, styles and
  requests from this origin only (no inline script or style at all: htmx is configured by a ``meta``
  tag), forbids framing, and sends no referrer.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from longops.api.auth import DEFAULT_ORG, ORG_SCOPE_KEY
from longops.api.deps import state_of
from longops.store.ui_sessions import SESSION_LIFETIME, UISession, session_for_token

SESSION_COOKIE = "longops_session"
CSRF_COOKIE = "longops_csrf"
CSRF_FIELD = "csrf_token"
COOKIE_PATH = "/ui"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """No live session and no open mode: the handler sends the browser to the sign-in page."""


class CSRFRejected(Exception):
    """A POST without the right ``csrf_token``: answered 403."""


@dataclass(frozen=True, slots=True)
class Viewer:
    org: str
    csrf_token: str
    signed_in: bool  # False in open mode
    new_csrf_cookie: bool = False  # the token was made for this response: set it as a cookie


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    set_cookie(request, response, SESSION_COOKIE, token, int(SESSION_LIFETIME.total_seconds()))


def clear_session_cookie(request: Request, response: Response) -> None:
    set_cookie(request, response, SESSION_COOKIE, "", 0)


def anonymous_csrf(request: Request) -> tuple[str, bool]:
    """The double-submit token of a browser without a session: (token, whether it is new)."""
    token = request.cookies.get(CSRF_COOKIE)
    if token:
        return token, False
    return secrets.token_urlsafe(32), True


def remember_csrf(request: Request, response: Response, token: str) -> None:
    set_cookie(request, response, CSRF_COOKIE, token, int(SESSION_LIFETIME.total_seconds()))


async def current_session(request: Request) -> UISession | None:
    token = request.cookies.get(SESSION_COOKIE)
    return None if not token else await session_for_token(state_of(request).db, token)


async def viewer_or_none(request: Request) -> Viewer | None:
    """The viewer, with the organization put in the request scope; None when sign-in is needed."""
    session = await current_session(request)
    if session is not None:
        viewer = Viewer(org=session.org_id, csrf_token=session.csrf_token, signed_in=True)
    else:
        state = state_of(request)
        if not await state.open_mode.applies(state.db):
            return None
        token, new = anonymous_csrf(request)
        viewer = Viewer(org=DEFAULT_ORG, csrf_token=token, signed_in=False, new_csrf_cookie=new)
    request.scope[ORG_SCOPE_KEY] = viewer.org
    return viewer


async def require_viewer(request: Request) -> Viewer:
    viewer = await viewer_or_none(request)
    if viewer is None:
        raise SignInRequired()
    return viewer


async def require_viewer_and_csrf(request: Request) -> Viewer:
    """For every POST of a signed-in (or open-mode) viewer: the viewer, once the form's token matched."""
    viewer = await require_viewer(request)
    await check_csrf(request, viewer.csrf_token)
    return viewer


async def check_csrf(request: Request, expected: str) -> None:
    sent = (await request.form()).get(CSRF_FIELD)
    if not isinstance(sent, str) or not secrets.compare_digest(sent.encode(), expected.encode()):
        raise CSRFRejected()


ViewerDep = Annotated[Viewer, Depends(require_viewer)]
ActingViewer = Annotated[Viewer, Depends(require_viewer_and_csrf)]
