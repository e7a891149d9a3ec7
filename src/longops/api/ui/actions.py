"""The dashboard's sign-in and sign-out, and its actions (POST): cancel and redeliver the webhook.

Every action calls the REST API's own route function with the viewer's organization, so each rule
(which states may be cancelled, when a webhook may be redelivered, waking the engine) lives in one
place; the dashboard only turns the answer into a one-line message on the page it returns to. Every
POST checks the form's CSRF token first (``security``) and does nothing without it.
"""

from __future__ import annotations

from collections.abc import Awaitable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from longops.api.deps import state_of
from longops.api.errors import APIError
from longops.api.routes import batches, deliveries, jobs
from longops.api.ui.render import SIGN_IN_PATH, UIRoute, back_with, page
from longops.api.ui.security import (
    SESSION_COOKIE,
    ActingViewer,
    anonymous_csrf,
    check_csrf,
    clear_session_cookie,
    remember_csrf,
    set_session_cookie,
    viewer_or_none,
)
from longops.domain.statuses import InvalidTransition
from longops.store.jobs import CancelNotAllowed
from longops.store.ui_sessions import end_session, open_session

router = APIRouter(prefix="/ui", route_class=UIRoute, include_in_schema=False)

WRONG_KEY = (
    "That key is not valid: it is unknown, revoked or mistyped. "
    "Create one with `longops keys create --org NAME`."
)


def _sign_in_page(request: Request, *, message: str | None = None, status_code: int = 200) -> Response:
    token, new = anonymous_csrf(request)
    context = {"message": message}
    response = page(request, "sign_in.html", context, None, status_code=status_code, csrf_token=token)
    if new:
        remember_csrf(request, response, token)
    return response


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_form(request: Request) -> Response:
    return _sign_in_page(request)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    await check_csrf(request, anonymous_csrf(request)[0])
    key = (await request.form()).get("api_key")
    opened = await open_session(state_of(request).db, key.strip()) if isinstance(key, str) else None
    if opened is None:
        return _sign_in_page(request, message=WRONG_KEY, status_code=401)
    response = RedirectResponse("/ui/", status_code=303)
    set_session_cookie(request, response, opened.token)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    viewer = await viewer_or_none(request)
    if viewer is not None:
        await check_csrf(request, viewer.csrf_token)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await end_session(state_of(request).db, token)
    response = RedirectResponse(SIGN_IN_PATH, status_code=303)
    clear_session_cookie(request, response)
    return response


async def _act(request: Request, back: str, action: Awaitable[object], done: str) -> Response:
    """Run an API action; back to ``back`` with ``done``, or with the API's own refusal."""
    try:
        await action
    except (CancelNotAllowed, InvalidTransition) as exc:
        return back_with(request, back, str(exc))
    except APIError as exc:
        return back_with(request, back, exc.message)
    return back_with(request, back, done)


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str, viewer: ActingViewer) -> Response:
    action = batches.cancel_batch(batch_id, state_of(request), viewer.org)
    return await _act(request, f"/ui/batches/{batch_id}", action, "Cancellation requested.")


@router.post("/batches/{batch_id}/redeliver")
async def redeliver_batch_webhook(request: Request, batch_id: str, viewer: ActingViewer) -> Response:
    action = deliveries.redeliver_batch_event(batch_id, state_of(request), viewer.org)
    return await _act(request, f"/ui/batches/{batch_id}", action, "Webhook queued for redelivery.")


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str, viewer: ActingViewer) -> Response:
    action = jobs.cancel_job(job_id, state_of(request), viewer.org)
    return await _act(request, f"/ui/jobs/{job_id}", action, "Cancellation requested.")


@router.post("/jobs/{job_id}/redeliver")
async def redeliver_job_webhook(request: Request, job_id: str, viewer: ActingViewer) -> Response:
    action = deliveries.redeliver_job_event(job_id, state_of(request), viewer.org)
    return await _act(request, f"/ui/jobs/{job_id}", action, "Webhook queued for redelivery.")
