"""Compare-and-set status writes for jobs. Every terminal transition goes through :func:`finish_job`
(or its bulk twin :func:`finish_jobs`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, bindparam, case, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.outcome import batch_outcome
from longops.domain.statuses import ItemStatus, JobStatus, ProviderBatchStatus, StopReason, allowed_from
from longops.store.events import enqueue_terminal_events
from longops.store.tables import jobs, provider_batches
from longops.store.views import request_counts

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
) -> bool:
    """Move a job to a terminal status if the lifecycle allows it from its current status (CAS).

    ``conditions`` narrow the compare-and-set further (e.g. "nothing was submitted yet"). When the CAS
    wins, the job's webhook event (if it has a ``callback_url``) is written in the same transaction.
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
    with_callback: Collection[str] | None = None,
) -> list[str]:
    """The bulk twin of :func:`finish_job`: many jobs to ``target`` in one statement (CAS per row).

    ``rows`` maps each job id to its own column values (e.g. ``result``, ``error``); a column a row
    does not name keeps its value, except ``error``, NULL by default as in :func:`finish_job`. Returns
    the ids whose CAS won, and writes their webhook events in the same transaction (one statement).
    ``with_callback`` (the caller read the locked job rows): the ids that have a ``callback_url``;
    the events statement is skipped when no winner has one.
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
    if with_callback is None:
        await enqueue_terminal_events(conn, finished, target, now)
    else:
        await enqueue_terminal_events(conn, [i for i in finished if i in with_callback], target, now)
    return finished


async def add_item_counts(
    conn: AsyncConnection, changed: Mapping[str, Counter[ItemStatus]], now: datetime
) -> None:
    """Add newly final items to their jobs' request counters (exact: callers count only rows they
    changed). One executemany for any number of jobs, in job id order: concurrent transactions lock
    job rows in the same order."""
    rows = [
        {
            "b_id": job_id,
            **{f"b_{column}": counts.get(status, 0) for status, column in _COUNTER_COLUMNS.items()},
        }
        for job_id, counts in sorted(changed.items())
        if any(counts.get(status, 0) for status in _COUNTER_COLUMNS)
    ]
    if rows:
        await conn.execute(_ADD_COUNTS.values(updated_at=now), rows)


_ADD_COUNTS = (
    update(jobs)
    .where(jobs.c.id == bindparam("b_id"))
    .values({column: jobs.c[column] + bindparam(f"b_{column}") for column in _COUNTER_COLUMNS.values()})
)


def _count(table: Any, *where: ColumnElement[bool]) -> Any:
    return select(func.count()).select_from(table).where(*where).scalar_subquery()


async def finalize_batch_if_done(conn: AsyncConnection, job_id: str, now: datetime) -> JobStatus | None:
    """End a batch whose provider batches have all ended; return its new status, or None if not done."""
    return (await finalize_batches_if_done(conn, [job_id], now)).get(job_id)


async def finalize_batches_if_done(
    conn: AsyncConnection, job_ids: Collection[str], now: datetime
) -> dict[str, JobStatus]:
    """End the batches among ``job_ids`` whose provider batches have all ended; return their new statuses.

    The job rows are locked (and read) first, in id order: provider batches of one job may complete
    in concurrent transactions, and without the lock each could see the other still running and
    neither would end the batch. With it, the later one waits, then sees the earlier one's commit
    in the next statement, which counts open and failed provider batches for every job at once.
    Open items are read off the locked row's request counters, which are exact (every write of a
    final item status adds what it changed, in its own transaction). Then one compare-and-set (with
    its events) per terminal status reached.
    """
    if not job_ids:
        return {}
    locked = await lock_jobs(conn, job_ids)
    candidates = {
        job["id"]: job
        for job in locked
        if not JobStatus(job["status"]).is_terminal and not open_item_count(job)
    }
    if not candidates:
        return {}
    # A new statement, so a new snapshot (READ COMMITTED) taken after the locks above were granted.
    found = await conn.execute(
        select(
            jobs.c.id,
            _count(
                provider_batches,
                provider_batches.c.job_id == jobs.c.id,
                provider_batches.c.status.in_((ProviderBatchStatus.CREATED, ProviderBatchStatus.RUNNING)),
            ),
            _count(
                provider_batches,
                provider_batches.c.job_id == jobs.c.id,
                provider_batches.c.status == ProviderBatchStatus.FAILED,
            ),
        ).where(jobs.c.id.in_(list(candidates)))
    )
    ending: dict[tuple[JobStatus, StopReason | None], dict[str, dict[str, Any]]] = {}
    states = found.all()
    reasons = await _provider_reasons(
        conn, [job_id for job_id, open_pbs, failed in states if failed and not open_pbs]
    )
    for job_id, open_pbs, failed_pbs in states:
        if open_pbs:
            continue
        job = candidates[job_id]
        counts = request_counts(job)
        outcome = batch_outcome(
            counts,
            cancel_requested=job["cancel_requested_at"] is not None,
            any_provider_batch_failed=bool(failed_pbs),
        )
        values: dict[str, Any] = {}  # error is NULL unless named
        if outcome.status == JobStatus.FAILED:
            message = f"no request succeeded ({counts.errored} errored)"
            if job_id in reasons:
                message += f"; the provider said: {reasons[job_id]}"
            values["error"] = {"type": "batch_failed", "message": message}
        ending.setdefault((outcome.status, outcome.stop_reason), {})[job_id] = values
    with_callback = {job_id for job_id, job in candidates.items() if job["callback_url"] is not None}
    ended: dict[str, JobStatus] = {}
    for (status, stop_reason), rows in ending.items():
        won = await finish_jobs(conn, status, now, rows, stop_reason=stop_reason, with_callback=with_callback)
        ended.update(dict.fromkeys(won, status))
    return ended


async def _provider_reasons(conn: AsyncConnection, job_ids: Sequence[str]) -> dict[str, str]:
    """Why each job's failed provider batches failed, in the provider's words: its distinct errors in
    request order, so a batch that fails says at the top level what the provider refused."""
    if not job_ids:
        return {}
    rows = await conn.execute(
        select(provider_batches.c.job_id, provider_batches.c.error)
        .where(
            provider_batches.c.job_id.in_(job_ids),
            provider_batches.c.status == ProviderBatchStatus.FAILED,
            provider_batches.c.error.is_not(None),
        )
        .order_by(provider_batches.c.job_id, provider_batches.c.first_seq)
    )
    distinct: dict[str, dict[str, None]] = {}
    for job_id, error in rows:
        distinct.setdefault(job_id, {})[f"{error['type']}: {error['message']}"] = None
    return {job_id: "; ".join(errors) for job_id, errors in distinct.items()}


async def lock_jobs(conn: AsyncConnection, job_ids: Collection[str]) -> Sequence[RowMapping]:
    """Lock these job rows in id order (the order every bulk writer of job rows follows) and read
    what finalizing them needs."""
    query = select(*_FINALIZE_COLUMNS).where(jobs.c.id.in_(sorted(job_ids))).order_by(jobs.c.id)
    return (await conn.execute(query.with_for_update())).mappings().all()


def open_item_count(job: RowMapping) -> int:
    """Items of a job row (as :func:`lock_jobs` reads it) that are not final yet, by its exact counters."""
    return int(job["n_total"]) - sum(int(job[column]) for column in _COUNTER_COLUMNS.values())


_FINALIZE_COLUMNS = (
    jobs.c.id,
    jobs.c.status,
    jobs.c.n_total,
    jobs.c.n_succeeded,
    jobs.c.n_errored,
    jobs.c.n_cancelled,
    jobs.c.n_expired,
    jobs.c.cancel_requested_at,
    jobs.c.callback_url,
)
