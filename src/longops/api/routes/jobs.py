"""``/v1/jobs``: create generic jobs; list, get and cancel every job, batches included (as Job objects)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from longops.api.callback_urls import ensure_callback_url_allowed
from longops.api.deps import Org, State
from longops.api.errors import APIError
from longops.api.limits import check_create_fields
from longops.api.offload import OffloadingRoute
from longops.domain.schemas import Job, Page
from longops.domain.statuses import JobStatus
from longops.engine import ingest
from longops.engine.workers import job_types
from longops.store import job_queue
from longops.store import jobs as job_store
from longops.store.views import LLM_BATCH, job_view

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=OffloadingRoute)


class JobCreate(BaseModel):
    """Body of ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid")

    job_type: str = Field(max_length=64, description="a registered handler's name, or batch_ingest")
    input: Any = Field(default=None, description="any JSON, handed to the handler as is")
    metadata: dict[str, Any] = Field(default_factory=dict)
    callback_url: str | None = None


@router.post("", status_code=201, response_model=Job)
async def create_job(
    body: JobCreate,
    request: Request,
    state: State,
    org: Org,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Job:
    known = job_types()
    if body.job_type == LLM_BATCH:
        raise APIError(422, "validation_error", "job_type: llm_batch jobs are created with POST /v1/batches")
    check_create_fields(
        state.settings, metadata=body.metadata, callback_url=body.callback_url, input=body.input
    )
    options = known.get(body.job_type)
    if options is None:
        raise APIError(
            422,
            "validation_error",
            f"job_type: unknown job type {body.job_type!r}; known job types: {', '.join(sorted(known))}",
        )
    if body.job_type == ingest.INGEST_JOB_TYPE:
        try:
            spec = await ingest.check_input(state.db, state.providers, org, body.input)
        except ingest.IngestInputError as exc:
            raise APIError(422, "validation_error", str(exc)) from None
        check_create_fields(
            state.settings, metadata=spec.metadata, callback_url=spec.callback_url, prefix="input."
        )
        await ensure_callback_url_allowed(spec.callback_url, state.settings, prefix="input.")
    await ensure_callback_url_allowed(body.callback_url, state.settings)
    new = job_queue.NewJob(
        org_id=org,
        job_type=body.job_type,
        input=body.input,
        max_attempts=options.max_attempts,
        timeout_seconds=options.timeout_seconds,
        metadata=body.metadata,
        callback_url=body.callback_url,
        idempotency_key=idempotency_key,
        request_hash=hashlib.sha256(await request.body()).hexdigest() if idempotency_key else None,
    )
    row, _replayed = await job_queue.create_job(state.db, new)
    if state.engine is not None:
        state.engine.wake()
    return job_view(row)


@router.get("", response_model=Page[Job])
async def list_jobs(
    state: State,
    org: Org,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    after: str | None = None,
    status: JobStatus | None = None,
    job_type: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[Job]:
    async with state.db.read() as conn:
        rows, has_more = await job_store.list_job_rows(
            conn, org, limit=limit, after=after, job_type=job_type, status=status
        )
    data = [job_view(row) for row in rows]
    return Page[Job](data=data, has_more=has_more, last_id=data[-1].id if data else None)


@router.get("/{job_id}", response_model=Job)
async def get_job(job_id: str, state: State, org: Org) -> Job:
    async with state.db.read() as conn:
        return job_view(await job_store.get_job_row(conn, org, job_id))


@router.post("/{job_id}/cancel", response_model=Job)
async def cancel_job(job_id: str, state: State, org: Org) -> Job:
    await job_store.cancel_job(state.db, org, job_id)
    if state.engine is not None:
        state.engine.wake()
    async with state.db.read() as conn:
        return job_view(await job_store.get_job_row(conn, org, job_id))
