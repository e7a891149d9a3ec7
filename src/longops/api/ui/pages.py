"""The dashboard's pages (GET): overview, batches, batch, item, jobs, job, and the results download.

Every read goes through the API's own route functions (``api.routes``), called with the viewer's
organization, so a page shows exactly what the REST API would answer to the same key: the same
scoping (another organization's id is a 404), the same objects, the same keyset pages. Nothing here
counts items: counts and progress come from each batch's stored ``request_counts``, items are read one
page at a time, and the overview's figures come from ``store.dashboard``. A batch or job page keeps
refreshing while the batch or job is active or its webhook is still to be delivered, then stops.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from longops.api.deps import AppState, state_of
from longops.api.routes import batches, deliveries, jobs
from longops.api.routes import usage as usage_route
from longops.api.ui.render import UIRoute, enum_filter, page
from longops.api.ui.security import ViewerDep
from longops.domain.statuses import ItemStatus, JobStatus
from longops.store import dashboard
from longops.store.events import delivery_pending
from longops.store.items import get_item_row
from longops.store.jobs import JobNotFound, get_batch, load_batches
from longops.store.views import LLM_BATCH, item_view

router = APIRouter(prefix="/ui", route_class=UIRoute, include_in_schema=False)

BATCHES_PER_PAGE = 25
ITEMS_PER_PAGE = 50
JOBS_PER_PAGE = 25
ATTENTION_ROWS = 10

Filter = Annotated[str | None, Query(max_length=64)]


async def _webhook_pending(state: AppState, job_id: str) -> bool:
    """Whether the page must keep refreshing for the webhook. Read *before* the deliveries: an attempt
    that ends between the two reads is then either still pending (the page refreshes and shows it
    next time) or already listed; read after, it could be neither, and the page would stop without it."""
    async with state.db.read() as conn:
        return await delivery_pending(conn, job_id)


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, viewer: ViewerDep) -> Response:
    state = state_of(request)
    async with state.db.read() as conn:
        counts = await dashboard.status_counts(conn, viewer.org)
        attention_rows = await dashboard.batches_needing_attention(conn, viewer.org, ATTENTION_ROWS)
        leader = await dashboard.current_leader(conn)
        last_poll = await dashboard.last_poll(conn, viewer.org)
        attention = await load_batches(conn, attention_rows, state.prices)
    recent = await batches.list_batches(state, viewer.org, limit=ATTENTION_ROWS)
    today = datetime.now(UTC).date()
    # GET /v1/usage itself (its summary rows: no scan of items), for today and this month (UTC).
    spent_today = await usage_route.usage(state, viewer.org, start=today.isoformat(), end=today.isoformat())
    spent_month = await usage_route.usage(
        state, viewer.org, start=today.replace(day=1).isoformat(), end=today.isoformat()
    )
    context = {
        "cost_today": spent_today.data[0].cost if spent_today.data else None,
        "cost_month": spent_month.data[0].cost if spent_month.data else None,
        "counts": counts,
        "attention": attention,
        "recent": recent.data,
        "leader": leader,
        "last_poll": last_poll,
        "statuses": list(JobStatus),
    }
    return page(request, "overview.html", context, viewer)


@router.get("/batches", response_class=HTMLResponse)
async def batch_list(
    request: Request,
    viewer: ViewerDep,
    status: Filter = None,
    provider: Filter = None,
    after: Filter = None,
    q: Filter = None,
) -> Response:
    state = state_of(request)
    status_filter = enum_filter(JobStatus, status, "status")
    query = (q or "").strip()
    if query:  # search by id: straight to the batch, if this organization has it
        try:
            await get_batch(state.db, viewer.org, query, state.prices)
        except JobNotFound:
            pass
        else:
            return RedirectResponse(f"/ui/batches/{query}", status_code=303)
    listed = await batches.list_batches(
        state,
        viewer.org,
        limit=BATCHES_PER_PAGE,
        after=after or None,
        status=status_filter,
        provider=provider or None,
    )
    context = {
        "batches": listed.data,
        "has_more": listed.has_more,
        "last_id": listed.last_id,
        "status": status_filter,
        "provider": provider or "",
        "q": query,
        "not_found": bool(query),
        "statuses": list(JobStatus),
        "providers": sorted(state.providers),
    }
    return page(request, "batches.html", context, viewer)


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
async def batch_page(
    request: Request,
    batch_id: str,
    viewer: ViewerDep,
    item_status: Filter = None,
    after: Filter = None,
) -> Response:
    state = state_of(request)
    status_filter = enum_filter(ItemStatus, item_status, "item_status")
    batch = await batches.get_batch(batch_id, request)
    items = await batches.list_items(
        batch_id, state, viewer.org, limit=ITEMS_PER_PAGE, after=after or None, status=status_filter
    )
    webhook_pending = await _webhook_pending(state, batch_id)  # before the deliveries: see there
    delivered = await deliveries.batch_deliveries(batch_id, state, viewer.org)
    context = {
        "batch": batch,
        "live": not batch.status.is_terminal or webhook_pending,
        "items": items.data,
        "has_more": items.has_more,
        "last_id": items.last_id,
        "item_status": status_filter,
        "after": after,
        "item_statuses": list(ItemStatus),
        "deliveries": delivered.data,
    }
    return page(request, "batch.html", context, viewer)


@router.get("/batches/{batch_id}/items/{item_id}", response_class=HTMLResponse)
async def item_page(request: Request, batch_id: str, item_id: str, viewer: ViewerDep) -> Response:
    state = state_of(request)
    batch = await batches.get_batch(batch_id, request)  # the organization's scope: 404 otherwise
    async with state.db.read() as conn:
        row = await get_item_row(conn, batch_id, item_id)
    if row is None:
        raise JobNotFound(item_id)
    context = {
        "batch": batch,
        "item": item_view(row, batch.provider, state.prices),
        "params": json.loads(row["params"]),
    }
    return page(request, "item.html", context, viewer)


@router.get("/batches/{batch_id}/results")
async def download_results(request: Request, batch_id: str, viewer: ViewerDep) -> StreamingResponse:
    """The REST API's results stream itself, offered as a file."""
    response = await batches.batch_results(batch_id, state_of(request), viewer.org)
    response.headers["Content-Disposition"] = f'attachment; filename="{batch_id}.ndjson"'
    return response


@router.get("/jobs", response_class=HTMLResponse)
async def job_list(
    request: Request,
    viewer: ViewerDep,
    status: Filter = None,
    job_type: Filter = None,
    after: Filter = None,
) -> Response:
    status_filter = enum_filter(JobStatus, status, "status")
    listed = await jobs.list_jobs(
        state_of(request),
        viewer.org,
        limit=JOBS_PER_PAGE,
        after=after or None,
        status=status_filter,
        job_type=job_type or None,
    )
    context = {
        "jobs": listed.data,
        "has_more": listed.has_more,
        "last_id": listed.last_id,
        "status": status_filter,
        "job_type": job_type or "",
        "statuses": list(JobStatus),
        "LLM_BATCH": LLM_BATCH,
    }
    return page(request, "jobs.html", context, viewer)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str, viewer: ViewerDep) -> Response:
    state = state_of(request)
    job = await jobs.get_job(job_id, state, viewer.org)
    if job.job_type == LLM_BATCH:
        return RedirectResponse(f"/ui/batches/{job_id}", status_code=303)
    webhook_pending = await _webhook_pending(state, job_id)
    delivered = await deliveries.job_deliveries(job_id, state, viewer.org)
    context = {
        "job": job,
        "deliveries": delivered.data,
        "live": not job.status.is_terminal or webhook_pending,
    }
    return page(request, "job.html", context, viewer)
