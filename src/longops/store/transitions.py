"""Compare-and-set status writes for jobs. Every terminal transition goes through :func:`finish_job`
(or its bulk twin :func:`finish_jobs`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.outcome import RequestCounts, batch_outcome
from longops.domain.statuses import ItemStatus, JobStatus, ProviderBatchStatus, StopReason, allowed_from
from longops.store.events import enqueue_terminal_events
from longops.store.tables import item_status_in, items, jobs, provider_batches

# A terminal job holds no lease and is never due again (see store/job_queue.py).
LEASE_CLEARED: dict[str, Any] = {"lease_owner": None, "due_at": None}

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
    has_callback: bool | None = None,
) -> bool:
    """Move a job to a terminal status if the lifecycle allows it from its current status (CAS).

    ``conditions`` narrow the compare-and-set further (e.g. "nothing was submitted yet"). When the CAS
    wins, the job's webhook event (if it has a ``callback_url``) is written in the same transaction.
    ``has_callback=False`` (the caller read the locked job row and it has none) skips that statement.
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
            **{**LEASE_CLEARED, **(extra or {})},
        )
    )
    if result.rowcount != 1:
        return False
    if has_callback is not False:
        await enqueue_terminal_events(conn, [job_id], target, now)
    return True


async def finish_jobs(
    conn: AsyncConnection,
    target: JobStatus,
    now: datetime,
    rows: Mapping[str, Mapping[str, Any]],
    *,
    stop_reason: StopReason | None = None,
    conditions: Sequence[ColumnElement[bool]] = (),
) -> list[str]:
    """The bulk twin of :func:`finish_job`: many jobs to ``target`` in one statement (CAS per row).

    ``rows`` maps each job id to its own column values (e.g. ``result``, ``error``); a column a row
    does not name keeps its value, except ``error``, NULL by default as in :func:`finish_job`. Returns
    the ids whose CAS won, and writes their webhook events in the same transaction (one statement).
    """
    assert target.is_terminal
    if not rows:
        return []
    columns = {name for values in rows.values() for name in values}
    per_row: dict[str, Any] = {
        name: case(
            {
                job_id: literal(values[name], jobs.c[name].type)
                for job_id, values in rows.items()
                if name in values
            },
            value=jobs.c.id,
            else_=None if name == "error" else jobs.c[name],
        )
        for name in columns
    }
    result = await conn.execute(
        update(jobs)
        .where(jobs.c.id.in_(list(rows)), jobs.c.status.in_(allowed_from(target)), *conditions)
        .values(
            status=target,
            completed_at=now,
            updated_at=now,
            stop_reason=stop_reason,
            **{"error": None, **LEASE_CLEARED, **per_row},
        )
        .returning(jobs.c.id)
    )
    finished = list(result.scalars().all())
    await enqueue_terminal_events(conn, finished, target, now)
    return finished


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


def _count(table: Any, *where: ColumnElement[bool]) -> Any:
    return select(func.count()).select_from(table).where(*where).scalar_subquery()


async def finalize_batch_if_done(conn: AsyncConnection, job_id: str, now: datetime) -> JobStatus | None:
    """End a batch whose provider batches have all ended; return its new status, or None if not done.

    The job row is locked (and read) first: provider batches of one job may complete in concurrent
    transactions, and without the lock each could see the other still running and neither would
    end the batch. With it, the later one waits, then sees the earlier one's commit in the next
    statement, which counts open and failed provider batches and looks for open items at once.
    Three statements when the batch ends (lock, counts, the CAS with its events), two otherwise.
    """
    job = (
        (await conn.execute(select(*_FINALIZE_COLUMNS).where(jobs.c.id == job_id).with_for_update()))
        .mappings()
        .one()
    )
    if JobStatus(job["status"]).is_terminal:
        return None
    # A new statement, so a new snapshot (READ COMMITTED) taken after the lock above was granted.
    open_pbs, failed_pbs, open_items = (
        await conn.execute(
            select(
                _count(
                    provider_batches,
                    provider_batches.c.job_id == job_id,
                    provider_batches.c.status.in_((ProviderBatchStatus.CREATED, ProviderBatchStatus.RUNNING)),
                ),
                _count(
                    provider_batches,
                    provider_batches.c.job_id == job_id,
                    provider_batches.c.status == ProviderBatchStatus.FAILED,
                ),
                select(literal(1))
                .where(items.c.job_id == job_id, item_status_in((ItemStatus.PENDING, ItemStatus.RUNNING)))
                .exists(),
            )
        )
    ).one()
    if open_pbs or open_items:
        return None
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
    if await finish_job(
        conn,
        job_id,
        outcome.status,
        now,
        stop_reason=outcome.stop_reason,
        error=error,
        has_callback=job["callback_url"] is not None,
    ):
        return outcome.status
    return None


_FINALIZE_COLUMNS = (
    jobs.c.status,
    jobs.c.n_total,
    jobs.c.n_succeeded,
    jobs.c.n_errored,
    jobs.c.n_cancelled,
    jobs.c.n_expired,
    jobs.c.cancel_requested_at,
    jobs.c.callback_url,
)
