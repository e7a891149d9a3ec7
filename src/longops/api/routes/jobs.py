"""``/v1/jobs``: every job, batches included (shown as Job objects)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from longops.api.deps import Org, State
from longops.domain.schemas import Job, Page
from longops.domain.statuses import JobStatus
from longops.store import jobs as job_store
from longops.store.views import job_view

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


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
