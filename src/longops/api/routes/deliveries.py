"""Webhook deliveries of a batch or job: the attempts so far, and redelivery of its event.

``GET …/deliveries`` lists finished attempts, oldest first (empty before the first one, and for a job
without ``callback_url``). ``POST …/deliveries/redeliver`` queues the job's event again with the same
id and body and a fresh attempt budget: 202 with the event; 409 while the job has not ended; 404 if
the job has no event (no ``callback_url``). Both are scoped to the caller's organization.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import RowMapping

from longops.api.deps import Org, State
from longops.api.errors import APIError
from longops.domain.statuses import JobStatus
from longops.store import events
from longops.store import jobs as job_store
from longops.store.types import utcnow
from longops.store.views import LLM_BATCH

router = APIRouter(tags=["webhooks"])


class Delivery(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int | None


class DeliveryList(BaseModel):
    data: list[Delivery]


class WebhookEvent(BaseModel):
    id: str
    object: Literal["webhook_event"] = "webhook_event"
    type: str
    state: str
    attempts: int
    next_attempt_at: datetime | None


async def _deliveries(state: State, org: str, job_id: str, *, batches_only: bool) -> DeliveryList:
    async with state.db.read() as conn:
        job = await job_store.get_job_row(conn, org, job_id)
        if batches_only and job["job_type"] != LLM_BATCH:
            raise job_store.JobNotFound(job_id)
        rows = await events.list_deliveries(conn, job_id)
    return DeliveryList(data=[Delivery.model_validate(dict(row)) for row in rows])


async def _redeliver(state: State, org: str, job_id: str, *, batches_only: bool) -> WebhookEvent:
    async with state.db.write() as conn:
        job = await job_store.get_job_row(conn, org, job_id)
        if batches_only and job["job_type"] != LLM_BATCH:
            raise job_store.JobNotFound(job_id)
        if not JobStatus(job["status"]).is_terminal:
            raise APIError(
                409, "invalid_transition", f"job is {job['status']}; it has no webhook to redeliver yet"
            )
        event: RowMapping | None = await events.redeliver(conn, job_id, utcnow())
    if event is None:
        raise APIError(404, "not_found", f"no webhook event for {job_id}: it has no callback_url")
    if state.engine is not None:
        state.engine.wake()
    return WebhookEvent.model_validate(dict(event))


@router.get("/v1/batches/{batch_id}/deliveries", response_model=DeliveryList)
async def batch_deliveries(batch_id: str, state: State, org: Org) -> DeliveryList:
    return await _deliveries(state, org, batch_id, batches_only=True)


@router.get("/v1/jobs/{job_id}/deliveries", response_model=DeliveryList)
async def job_deliveries(job_id: str, state: State, org: Org) -> DeliveryList:
    return await _deliveries(state, org, job_id, batches_only=False)


@router.post("/v1/batches/{batch_id}/deliveries/redeliver", status_code=202, response_model=WebhookEvent)
async def redeliver_batch_event(batch_id: str, state: State, org: Org) -> WebhookEvent:
    return await _redeliver(state, org, batch_id, batches_only=True)


@router.post("/v1/jobs/{job_id}/deliveries/redeliver", status_code=202, response_model=WebhookEvent)
async def redeliver_job_event(job_id: str, state: State, org: Org) -> WebhookEvent:
    return await _redeliver(state, org, job_id, batches_only=False)
