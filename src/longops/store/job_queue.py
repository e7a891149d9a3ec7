"""Generic jobs in the database: create, claim under a lease, renew, report, record outcomes, reap.

A generic job lives in the shared ``jobs`` table. Besides the status, three columns drive it:
``lease_owner`` (the worker holding it), ``due_at`` (when a worker may next claim it) and
``attempts`` (claims so far; ``max_attempts`` and ``timeout_seconds`` come from the handler).

Lifecycle:

* Created ``pending`` and due at once (there is nothing to prepare, so ``created`` is not used).
* A claim makes it ``running``: ``attempts + 1``, ``lease_owner`` = the worker, ``due_at`` = the end
  of the lease. A claim takes a pending job, a running one whose lease expired (its worker died) or
  one whose retry is due.
* While the handler runs, its worker renews the lease (moves ``due_at`` on) every third of
  ``JOB_LEASE_SECONDS`` and reads ``cancel_requested_at``.
* A failed attempt that will be retried stays ``running`` with no lease owner, due at the retry
  time, its ``error`` showing the failure.
* The terminal transition goes through ``finish_jobs`` / ``finish_job`` (the CAS that also writes
  the webhook event), which clears ``lease_owner`` and ``due_at``.

Invariants:

* Fencing: every write a worker makes about a job it runs (renewal, progress, outcome, release) is
  a compare-and-set on (id, ``attempts`` = its attempt, ``lease_owner`` = itself, ``running``). Once
  a lease has expired and another worker has claimed the job, the first one can change nothing:
  each job is finished once, by the attempt that holds it.
* A job whose cancel was requested ends ``cancelled`` whatever its handler did: every other outcome's
  CAS requires ``cancel_requested_at IS NULL``, and the outcomes that lose on it end ``cancelled``.
  Nothing claims a job whose cancel was requested, nor one that has used all its attempts;
  :func:`reap` ends those once no live lease holds them.
* Per-type concurrency limits hold across instances: the claim counts the type's live leases
  (``running``, an owner, ``due_at`` in the future) in the transaction that claims, under a per-type
  transaction-level advisory lock on PostgreSQL; on SQLite the write transaction serializes claims.
* Claims take ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent workers never wait on each
  other's rows. Every statement covers any number of jobs: a worker's round costs the same number
  of statements for one job as for a hundred.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    RowMapping,
    Select,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.clock import Clock, system_clock
from longops.domain.ids import new_id
from longops.domain.lock_keys import advisory_lock_key
from longops.domain.statuses import JobStatus, StopReason
from longops.store.db import Database
from longops.store.jobs import idempotent_match
from longops.store.tables import jobs
from longops.store.transitions import finish_jobs
from longops.store.views import LLM_BATCH

REAP_CHUNK = 500


@dataclass(frozen=True)
class NewJob:
    org_id: str
    job_type: str
    input: Any
    max_attempts: int
    timeout_seconds: float
    metadata: dict[str, Any] = field(default_factory=dict)
    callback_url: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None


async def create_job(db: Database, new: NewJob, *, clock: Clock = system_clock) -> tuple[RowMapping, bool]:
    """Store a new ``pending`` job, due now. Returns (its row as committed, replayed); with an
    ``Idempotency-Key`` used before, the earlier job's row as it is now."""
    for attempt in range(2):
        try:
            return await _create_job_once(db, new, clock())
        except IntegrityError:
            # A concurrent create with the same Idempotency-Key won the unique index: replay it.
            if new.idempotency_key is None or attempt == 1:
                raise
    raise AssertionError("unreachable")


async def _create_job_once(db: Database, new: NewJob, now: datetime) -> tuple[RowMapping, bool]:
    async with db.write() as conn:
        existing = await idempotent_match(conn, new, now)
        if existing is not None:
            return (await conn.execute(select(jobs).where(jobs.c.id == existing))).mappings().one(), True
        job_id = new_id("job")
        await conn.execute(
            insert(jobs).values(
                id=job_id,
                org_id=new.org_id,
                job_type=new.job_type,
                status=JobStatus.PENDING,
                input=new.input,
                metadata=new.metadata,
                callback_url=new.callback_url,
                idempotency_key=new.idempotency_key,
                request_hash=new.request_hash,
                max_attempts=new.max_attempts,
                timeout_seconds=new.timeout_seconds,
                due_at=now,
                created_at=now,
                updated_at=now,
            )
        )
        return (await conn.execute(select(jobs).where(jobs.c.id == job_id))).mappings().one(), False


BULK_INSERT_CHUNK = 5000

# PostgreSQL: one statement for the whole list, the columns sent as arrays.
_PG_BULK_INSERT = text(
    """
    INSERT INTO jobs (id, org_id, job_type, status, input, metadata, callback_url, max_attempts,
                      timeout_seconds, due_at, created_at, updated_at)
    SELECT v.id, v.org_id, v.job_type, :status, v.input::json, v.metadata::json, v.callback_url,
           v.max_attempts, v.timeout_seconds, :now, :now, :now
    FROM unnest(CAST(:ids AS text[]), CAST(:org_ids AS text[]), CAST(:job_types AS text[]),
                CAST(:inputs AS text[]), CAST(:metadata AS text[]), CAST(:callback_urls AS text[]),
                CAST(:max_attempts AS integer[]), CAST(:timeouts AS double precision[]))
         AS v(id, org_id, job_type, input, metadata, callback_url, max_attempts, timeout_seconds)
    """
).bindparams(bindparam("now", type_=jobs.c.created_at.type))


async def create_jobs_bulk(
    db: Database, new_jobs: Sequence[NewJob], *, clock: Clock = system_clock
) -> list[str]:
    """Store many new ``pending`` jobs at once, all due now, in one transaction (all or none).

    The bulk twin of :func:`create_job` for producers that enqueue thousands of jobs: one
    ``INSERT … SELECT FROM unnest(…)`` on PostgreSQL (then ``ANALYZE jobs`` when the list is large,
    so the workers' claims plan against the grown queue), an executemany per
    :data:`BULK_INSERT_CHUNK` jobs on SQLite. Idempotency keys are not supported here (a job carrying
    one raises ``ValueError``: use :func:`create_job`). Returns the new jobs' ids, in order. Workers
    find the jobs at their next poll (``WORKER_POLL_SECONDS``).
    """
    if any(new.idempotency_key is not None for new in new_jobs):
        raise ValueError("create_jobs_bulk does not take idempotency keys; use create_job")
    now = clock()
    ids = [new_id("job") for _ in new_jobs]
    if not ids:
        return ids
    async with db.write() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                _PG_BULK_INSERT,
                {
                    "status": JobStatus.PENDING.value,
                    "now": now,
                    "ids": ids,
                    "org_ids": [new.org_id for new in new_jobs],
                    "job_types": [new.job_type for new in new_jobs],
                    "inputs": [json.dumps(new.input) for new in new_jobs],
                    "metadata": [json.dumps(new.metadata) for new in new_jobs],
                    "callback_urls": [new.callback_url for new in new_jobs],
                    "max_attempts": [new.max_attempts for new in new_jobs],
                    "timeouts": [float(new.timeout_seconds) for new in new_jobs],
                },
            )
            if len(ids) >= BULK_INSERT_CHUNK:
                await conn.execute(text("ANALYZE jobs"))
            return ids
        rows = [
            {
                "id": job_id,
                "org_id": new.org_id,
                "job_type": new.job_type,
                "status": JobStatus.PENDING,
                "input": new.input,
                "metadata": new.metadata,
                "callback_url": new.callback_url,
                "max_attempts": new.max_attempts,
                "timeout_seconds": new.timeout_seconds,
                "due_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for job_id, new in zip(ids, new_jobs, strict=True)
        ]
        for start in range(0, len(rows), BULK_INSERT_CHUNK):
            await conn.execute(insert(jobs), rows[start : start + BULK_INSERT_CHUNK])
    return ids


@dataclass(frozen=True)
class Claimed:
    """A job this worker now holds, for attempt number ``attempt``."""

    id: str
    job_type: str
    org_id: str
    input: Any
    attempt: int
    max_attempts: int
    timeout_seconds: float | None


@dataclass(frozen=True)
class Held:
    """The fencing key of one attempt: writes about it succeed only while it still holds the job."""

    id: str
    attempt: int


def _claimable(now: datetime) -> ColumnElement[bool]:
    return and_(
        jobs.c.due_at <= now,
        jobs.c.status.in_((JobStatus.PENDING, JobStatus.RUNNING)),
        jobs.c.attempts < jobs.c.max_attempts,
        jobs.c.cancel_requested_at.is_(None),
    )


def _owned(owner: str, held: Sequence[Held]) -> list[ColumnElement[bool]]:
    return [
        jobs.c.status == JobStatus.RUNNING,
        jobs.c.lease_owner == owner,
        tuple_(jobs.c.id, jobs.c.attempts).in_([(h.id, h.attempt) for h in held]),
    ]


def type_lock_key(job_type: str) -> int:
    """The signed 64-bit advisory-lock key that serializes claims of one job type (PostgreSQL)."""
    return advisory_lock_key(f"longops-job-type:{job_type}")


async def claim_jobs(
    conn: AsyncConnection,
    *,
    owner: str,
    now: datetime,
    lease: timedelta,
    slots: int,
    limits: Mapping[str, int | None],
    exclude: Sequence[str] = (),
) -> list[Claimed]:
    """Claim up to ``slots`` due jobs of the types in ``limits`` (type → concurrency limit or None).

    One statement for all unlimited types; for limited types that have due jobs, per type: the
    advisory lock (PostgreSQL), the count of live leases, and a claim of what the limit leaves.
    ``exclude`` are jobs this worker already runs (never claimed back by their own worker).
    """
    claimed: list[Claimed] = []
    limited = {job_type: limit for job_type, limit in limits.items() if limit is not None}
    unlimited = [job_type for job_type, limit in limits.items() if limit is None]
    if limited and slots:
        due_types = (
            await conn.execute(
                select(jobs.c.job_type)
                .where(_claimable(now), jobs.c.job_type.in_(list(limited)))
                .group_by(jobs.c.job_type)
            )
        ).scalars()
        for job_type in sorted(due_types):
            room = slots - len(claimed)
            if room <= 0:
                break
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": type_lock_key(job_type)}
                )
            live = await conn.scalar(
                select(func.count()).where(
                    jobs.c.job_type == job_type,
                    jobs.c.status == JobStatus.RUNNING,
                    jobs.c.lease_owner.is_not(None),
                    jobs.c.due_at > now,
                )
            )
            room = min(room, limited[job_type] - int(live or 0))
            if room > 0:
                claimed += await _claim(conn, [job_type], room, owner, now, lease, exclude)
    room = slots - len(claimed)
    if unlimited and room > 0:
        claimed += await _claim(conn, unlimited, room, owner, now, lease, exclude)
    return claimed


async def _claim(
    conn: AsyncConnection,
    job_types: Sequence[str],
    limit: int,
    owner: str,
    now: datetime,
    lease: timedelta,
    exclude: Sequence[str],
) -> list[Claimed]:
    due = select(jobs.c.id).where(_claimable(now), jobs.c.job_type.in_(list(job_types)))
    if exclude:
        due = due.where(jobs.c.id.not_in(list(exclude)))
    due = due.order_by(jobs.c.due_at).limit(limit)
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    picked = due.cte("picked")
    rows = await conn.execute(
        update(jobs)
        .where(jobs.c.id.in_(select(picked.c.id)), _claimable(now))
        .values(
            status=JobStatus.RUNNING,
            attempts=jobs.c.attempts + 1,
            lease_owner=owner,
            due_at=now + lease,
            started_at=func.coalesce(jobs.c.started_at, now),
            updated_at=now,
        )
        .returning(
            jobs.c.id,
            jobs.c.job_type,
            jobs.c.org_id,
            jobs.c.input,
            jobs.c.attempts,
            jobs.c.max_attempts,
            jobs.c.timeout_seconds,
        )
    )
    return [
        Claimed(
            id=row.id,
            job_type=row.job_type,
            org_id=row.org_id,
            input=row.input,
            attempt=row.attempts,
            max_attempts=row.max_attempts,
            timeout_seconds=row.timeout_seconds,
        )
        for row in rows
    ]


async def renew_leases(
    conn: AsyncConnection, owner: str, held: Sequence[Held], now: datetime, lease: timedelta
) -> dict[str, bool]:
    """Extend the leases still held; returns {job id: cancel requested} for those (lost ones are absent)."""
    if not held:
        return {}
    rows = await conn.execute(
        update(jobs)
        .where(*_owned(owner, held))
        .values(due_at=now + lease)
        .returning(jobs.c.id, jobs.c.cancel_requested_at)
    )
    return {job_id: cancel_at is not None for job_id, cancel_at in rows}


async def write_progress(
    conn: AsyncConnection, owner: str, reports: Mapping[Held, dict[str, Any]], now: datetime
) -> dict[str, bool]:
    """Store the latest progress report of each attempt that still holds its job; returns
    {job id: cancel requested} for those (as :func:`renew_leases` does)."""
    if not reports:
        return {}
    rows = await conn.execute(
        update(jobs)
        .where(*_owned(owner, list(reports)))
        .values(
            progress=case(
                {held.id: literal(report, jobs.c.progress.type) for held, report in reports.items()},
                value=jobs.c.id,
                else_=jobs.c.progress,
            ),
            updated_at=now,
        )
        .returning(jobs.c.id, jobs.c.cancel_requested_at)
    )
    return {job_id: cancel_at is not None for job_id, cancel_at in rows}


class OutcomeKind(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    RETRY = "retry"  # failed attempt, another one is due at ``retry_at``
    CANCELLED = "cancelled"
    RELEASED = "released"  # given back unfinished (graceful shutdown): due again now, attempt not counted


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as the worker saw it."""

    held: Held
    kind: OutcomeKind
    result: Any = None
    error: dict[str, Any] | None = None
    stop_reason: StopReason | None = None
    retry_at: datetime | None = None
    progress: dict[str, Any] | None = None  # the latest report, if it was not written yet

    def values(self, **columns: Any) -> dict[str, Any]:
        if self.progress is not None:
            columns["progress"] = self.progress
        return columns


async def record_outcomes(
    conn: AsyncConnection, owner: str, outcomes: Sequence[Outcome], now: datetime
) -> dict[str, str]:
    """Write the outcomes of finished attempts; returns {job id: what it became} for those written.

    What it became is a terminal status, ``retry`` or ``released``. An attempt whose lease was lost
    writes nothing and is absent. A job whose cancel was requested ends ``cancelled`` (see module).
    """
    written: dict[str, str] = {}
    no_cancel = jobs.c.cancel_requested_at.is_(None)
    by_kind: dict[OutcomeKind, list[Outcome]] = {}
    for outcome in outcomes:
        by_kind.setdefault(outcome.kind, []).append(outcome)
    to_cancel = list(by_kind.get(OutcomeKind.CANCELLED, []))

    def settle(group: Sequence[Outcome], won: Sequence[str], became: str) -> None:
        winners = set(won)
        for outcome in group:
            if outcome.held.id in winners:
                written[outcome.held.id] = became
            elif outcome.kind != OutcomeKind.RELEASED:
                to_cancel.append(outcome)  # lost on cancel_requested_at, or lost the lease

    completed = by_kind.get(OutcomeKind.COMPLETED, [])
    if completed:
        won = await finish_jobs(
            conn,
            JobStatus.COMPLETED,
            now,
            {o.held.id: o.values(result=o.result) for o in completed},
            conditions=[*_owned(owner, [o.held for o in completed]), no_cancel],
        )
        settle(completed, won, JobStatus.COMPLETED)
    failed = by_kind.get(OutcomeKind.FAILED, [])
    for stop_reason in sorted({o.stop_reason for o in failed if o.stop_reason is not None}):
        group = [o for o in failed if o.stop_reason == stop_reason]
        won = await finish_jobs(
            conn,
            JobStatus.FAILED,
            now,
            {o.held.id: o.values(error=o.error) for o in group},
            stop_reason=stop_reason,
            conditions=[*_owned(owner, [o.held for o in group]), no_cancel],
        )
        settle(group, won, JobStatus.FAILED)
    retries = by_kind.get(OutcomeKind.RETRY, [])
    if retries:
        won = await _update_owned(
            conn,
            owner,
            {o.held: o.values(error=o.error, due_at=o.retry_at) for o in retries},
            now,
            [no_cancel],
            lease_owner=None,
        )
        settle(retries, won, OutcomeKind.RETRY)
    released = by_kind.get(OutcomeKind.RELEASED, [])
    if released:
        won = await _update_owned(
            conn,
            owner,
            {o.held: o.values() for o in released},
            now,
            [],
            lease_owner=None,
            due_at=now,
            attempts=jobs.c.attempts - 1,
        )
        settle(released, won, OutcomeKind.RELEASED)
    if to_cancel:
        won = await finish_jobs(
            conn,
            JobStatus.CANCELLED,
            now,
            {o.held.id: o.values() for o in to_cancel},
            stop_reason=StopReason.CANCELLED,
            conditions=_owned(owner, [o.held for o in to_cancel]),
        )
        for job_id in won:
            written[job_id] = JobStatus.CANCELLED
    return written


async def _update_owned(
    conn: AsyncConnection,
    owner: str,
    rows: Mapping[Held, Mapping[str, Any]],
    now: datetime,
    conditions: Sequence[ColumnElement[bool]],
    **common: Any,
) -> list[str]:
    """A non-terminal write to attempts still held: per-row ``rows`` values plus ``common`` ones."""
    columns = {name for values in rows.values() for name in values}
    per_row = {
        name: case(
            {
                held.id: literal(values[name], jobs.c[name].type)
                for held, values in rows.items()
                if name in values
            },
            value=jobs.c.id,
            else_=jobs.c[name],
        )
        for name in columns
    }
    result = await conn.execute(
        update(jobs)
        .where(*_owned(owner, list(rows)), *conditions)
        .values(updated_at=now, **common, **per_row)
        .returning(jobs.c.id)
    )
    return list(result.scalars())


async def reap(conn: AsyncConnection, now: datetime) -> dict[str, int]:
    """End the running jobs no worker will run again: cancel requested and no live lease →
    ``cancelled``; lease expired with no attempts left → ``failed`` (``max_attempts``).

    Bounded: at most :data:`REAP_CHUNK` of each per call. Returns how many of each it ended.
    """
    generic = [jobs.c.status == JobStatus.RUNNING, jobs.c.job_type != LLM_BATCH, jobs.c.due_at.is_not(None)]
    abandoned_cancel = and_(
        *generic,
        jobs.c.cancel_requested_at.is_not(None),
        or_(jobs.c.lease_owner.is_(None), jobs.c.due_at <= now),
    )
    exhausted = and_(
        *generic,
        jobs.c.lease_owner.is_not(None),
        jobs.c.due_at <= now,
        jobs.c.attempts >= jobs.c.max_attempts,
    )
    counts = {}
    cancelled = await _due(conn, select(jobs.c.id).where(abandoned_cancel))
    won = await finish_jobs(
        conn,
        JobStatus.CANCELLED,
        now,
        {job_id: {} for (job_id,) in cancelled},
        stop_reason=StopReason.CANCELLED,
        conditions=[abandoned_cancel],
    )
    counts["cancelled"] = len(won)
    exhausted_rows = await _due(conn, select(jobs.c.id, jobs.c.attempts).where(exhausted))
    won = await finish_jobs(
        conn,
        JobStatus.FAILED,
        now,
        {
            row.id: {
                "error": {
                    "type": "lease_expired",
                    "message": (
                        f"attempt {row.attempts} of {row.attempts} stopped renewing its lease (its worker "
                        "died or lost the database) and no attempts are left"
                    ),
                }
            }
            for row in exhausted_rows
        },
        stop_reason=StopReason.MAX_ATTEMPTS,
        conditions=[exhausted],
    )
    counts["failed"] = len(won)
    return counts


async def _due(conn: AsyncConnection, query: Select[Any]) -> Sequence[Row[Any]]:
    query = query.limit(REAP_CHUNK)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows: Sequence[Row[Any]] = (await conn.execute(query)).all()
    return rows
