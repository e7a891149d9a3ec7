"""Compare-and-set status writes for jobs. Every terminal transition goes through :func:`finish_job`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.outcome import RequestCounts, batch_outcome
from longops.domain.statuses import ItemStatus, JobStatus, ProviderBatchStatus, StopReason, allowed_from
from longops.store.tables import items, jobs, provider_batches

_COUNTER_COLUMNS = {
    ItemStatus.SUCCEEDED: "n_succeeded",
    ItemStatus.ERRORED: "n_errored",
    ItemStatus.CANCELLED: "n_cancelled",
    ItemStatus.EXPIRED: "n_expired",
}


async def start_job(conn: AsyncConnection, job_id: str, now: datetime) -> bool:
    """created/pending → running (CAS). False if the job was not in a state that allows it."""
    result = await conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_(allowed_from(JobStatus.RUNNING)))
        .values(status=JobStatus.RUNNING, started_at=func.coalesce(jobs.c.started_at, now), updated_at=now)
    )
    return result.rowcount == 1


async def finish_job(
    conn: AsyncConnection,
    job_id: str,
    target: JobStatus,
    now: datetime,
    *,
    stop_reason: StopReason | None = None,
    error: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    conditions: Sequence[ColumnElement[bool]] = (),
) -> bool:
    """Move a job to a terminal status if the lifecycle allows it from its current status (CAS).

    ``conditions`` narrow the compare-and-set further (e.g. "nothing was submitted yet").
    """
    assert target.is_terminal
    result = await conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_(allowed_from(target)), *conditions)
        .values(
            status=target,
            completed_at=now,
            updated_at=now,
            stop_reason=stop_reason,
            error=error,
            **(extra or {}),
        )
    )
    return result.rowcount == 1


async def add_item_counts(
    conn: AsyncConnection, job_id: str, changed: Counter[ItemStatus], now: datetime
) -> None:
    """Add newly final items to the job's request counters (exact: callers count only rows they changed)."""
    values: dict[str, Any] = {
        _COUNTER_COLUMNS[status]: jobs.c[_COUNTER_COLUMNS[status]] + count
        for status, count in changed.items()
        if count and status in _COUNTER_COLUMNS
    }
    if values:
        await conn.execute(update(jobs).where(jobs.c.id == job_id).values(updated_at=now, **values))


async def finalize_batch_if_done(conn: AsyncConnection, job_id: str, now: datetime) -> JobStatus | None:
    """End a batch whose provider batches have all ended; return its new status, or None if not done."""
    open_pbs = await conn.scalar(
        select(func.count())
        .select_from(provider_batches)
        .where(
            provider_batches.c.job_id == job_id,
            provider_batches.c.status.in_((ProviderBatchStatus.CREATED, ProviderBatchStatus.RUNNING)),
        )
    )
    if open_pbs:
        return None
    job = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).mappings().one()
    if JobStatus(job["status"]).is_terminal:
        return None
    open_items = await conn.scalar(
        select(func.count())
        .select_from(items)
        .where(items.c.job_id == job_id, items.c.status.in_((ItemStatus.PENDING, ItemStatus.RUNNING)))
    )
    if open_items:
        return None
    failed_pbs = await conn.scalar(
        select(func.count())
        .select_from(provider_batches)
        .where(provider_batches.c.job_id == job_id, provider_batches.c.status == ProviderBatchStatus.FAILED)
    )
    counts = RequestCounts(
        total=job["n_total"],
        succeeded=job["n_succeeded"],
        errored=job["n_errored"],
        cancelled=job["n_cancelled"],
        expired=job["n_expired"],
    )
    outcome = batch_outcome(
        counts,
        cancel_requested=job["cancel_requested_at"] is not None,
        any_provider_batch_failed=bool(failed_pbs),
    )
    error = None
    if outcome.status == JobStatus.FAILED:
        error = {"type": "batch_failed", "message": f"no request succeeded ({counts.errored} errored)"}
    if await finish_job(conn, job_id, outcome.status, now, stop_reason=outcome.stop_reason, error=error):
        return outcome.status
    return None
