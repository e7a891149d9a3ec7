"""The webhook outbox: writing events with terminal transitions, claiming them, recording attempts.

Invariants:

* An event is inserted by :func:`enqueue_terminal_events` inside the transaction of the terminal
  compare-and-set (``finish_job``, ``finish_jobs``), and only when that CAS won: every terminal job with a
  ``callback_url`` has exactly one event (a unique index on ``job_id``), and a rolled-back transition
  leaves none.
* :func:`claim_due` hands a due event to one sender at a time: on PostgreSQL the rows are locked with
  ``FOR UPDATE SKIP LOCKED`` and leased (``claimed_until``) in the same transaction, so concurrent
  dispatchers on other instances skip them; on SQLite the write transaction itself serializes
  claimers. Claiming reserves the attempt number (``attempts + 1``) and inserts its delivery row.
* :func:`record_attempts` completes the delivery rows, and changes an event's state only if nothing
  happened to it since the claim (same ``attempts`` and ``budget_base``): a redelivery or a newer
  attempt during a slow send is never overwritten by the older attempt's outcome.
* The job's ``callback_*`` summary follows the latest attempt (``callback_attempts`` only grows).
  Nothing here writes a job's ``status``.
* Every cycle costs a constant number of statements, whatever the number of events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import RowMapping, bindparam, case, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.ids import new_id
from longops.domain.statuses import JobStatus
from longops.store.tables import jobs
from longops.store.types import UTCDateTime
from longops.store.views import LLM_BATCH
from longops.store.webhook_tables import webhook_deliveries, webhook_events

ORPHANED_ATTEMPT = "no outcome recorded: the sending instance stopped during this attempt"


class EventState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # the attempt budget is spent
    GONE = "gone"  # the receiver answered 410


async def enqueue_terminal_events(
    conn: AsyncConnection, job_ids: Sequence[str], status: JobStatus, now: datetime
) -> None:
    """Insert the events of jobs that just became ``status`` — those that have a ``callback_url``.

    Call it in the transaction of the terminal compare-and-set, with the ids whose CAS won. One
    statement (``INSERT … SELECT`` from the job rows) however many jobs, and jobs without a callback
    cost nothing more.
    """
    if not job_ids:
        return
    event_id = case({job_id: literal(new_id("evt")) for job_id in job_ids}, value=jobs.c.id)
    kind = case(
        (jobs.c.job_type == LLM_BATCH, literal(f"batch.{status}")),
        else_=literal(f"job.{status}"),
    )
    stamp = literal(now, UTCDateTime())
    source = select(
        event_id, jobs.c.id, kind, stamp, literal(EventState.PENDING.value), stamp, stamp, stamp
    ).where(jobs.c.id.in_(job_ids), jobs.c.callback_url.is_not(None))
    await conn.execute(
        insert(webhook_events).from_select(
            ["id", "job_id", "type", "occurred_at", "state", "next_attempt_at", "created_at", "updated_at"],
            source,
        )
    )


@dataclass(frozen=True)
class Claim:
    """One due event, leased to this sender for one attempt numbered ``attempt``."""

    event_id: str
    job_id: str
    type: str
    occurred_at: datetime
    callback_url: str
    attempt: int
    budget_base: int
    payload: str | None


async def claim_due(
    conn: AsyncConnection, now: datetime, *, limit: int, lease: timedelta, skip_locked: bool
) -> list[Claim]:
    """Lease up to ``limit`` due events and reserve their next attempt (see the module invariants).

    An earlier attempt of a claimed event that never got an outcome (its sender died while its lease
    ran) is marked with :data:`ORPHANED_ATTEMPT` here.
    """
    e = webhook_events.c
    due = (
        select(
            e.id, e.job_id, e.type, e.occurred_at, e.attempts, e.budget_base, e.payload, jobs.c.callback_url
        )
        .join(jobs, jobs.c.id == e.job_id)
        .where(
            e.state == EventState.PENDING,
            e.next_attempt_at <= now,
            or_(e.claimed_until.is_(None), e.claimed_until <= now),
        )
        .order_by(e.next_attempt_at)
        .limit(limit)
    )
    if skip_locked:
        due = due.with_for_update(skip_locked=True, of=webhook_events)
    rows = (await conn.execute(due)).mappings().all()
    if not rows:
        return []
    ids = [row["id"] for row in rows]
    d = webhook_deliveries.c
    await conn.execute(
        update(webhook_deliveries)
        .where(d.event_id.in_(ids), d.duration_ms.is_(None), d.error.is_(None))
        .values(error=ORPHANED_ATTEMPT)
    )
    await conn.execute(
        update(webhook_events)
        .where(e.id.in_(ids))
        .values(attempts=e.attempts + 1, claimed_until=now + lease, updated_at=now)
    )
    claims = [
        Claim(
            event_id=row["id"],
            job_id=row["job_id"],
            type=row["type"],
            occurred_at=row["occurred_at"],
            callback_url=row["callback_url"],
            attempt=row["attempts"] + 1,
            budget_base=row["budget_base"],
            payload=row["payload"],
        )
        for row in rows
    ]
    await conn.execute(
        insert(webhook_deliveries),
        [{"event_id": c.event_id, "attempt": c.attempt, "at": now} for c in claims],
    )
    return claims


async def job_rows(conn: AsyncConnection, job_ids: Sequence[str]) -> Sequence[RowMapping]:
    """The job rows of events (any organization: the dispatcher serves them all)."""
    return (await conn.execute(select(jobs).where(jobs.c.id.in_(job_ids)))).mappings().all()


async def save_payloads(conn: AsyncConnection, payloads: dict[str, str], now: datetime) -> None:
    """Fix the body of events sent for the first time (a body, once stored, never changes)."""
    if not payloads:
        return
    await conn.execute(
        update(webhook_events)
        .where(webhook_events.c.id == bindparam("b_id"), webhook_events.c.payload.is_(None))
        .values(payload=bindparam("b_payload"), updated_at=now),
        [{"b_id": event_id, "b_payload": body} for event_id, body in payloads.items()],
    )


async def next_due_at(conn: AsyncConnection) -> datetime | None:
    """When the earliest pending event may next be claimed (its retry time, or its lease's end)."""
    e = webhook_events.c
    effective = case((e.claimed_until > e.next_attempt_at, e.claimed_until), else_=e.next_attempt_at)
    value: datetime | None = await conn.scalar(
        select(func.min(effective)).where(e.state == EventState.PENDING)
    )
    return value


@dataclass(frozen=True)
class AttemptRecord:
    """The outcome of one claimed attempt and the event state it leads to."""

    claim: Claim
    status_code: int | None
    error: str | None
    duration_ms: int
    state: EventState
    next_attempt_at: datetime | None

    @property
    def delivered(self) -> bool:
        return self.state == EventState.DELIVERED


async def record_attempts(conn: AsyncConnection, records: Sequence[AttemptRecord], now: datetime) -> None:
    """Complete the delivery rows, move the events on, and update the jobs' callback summaries."""
    if not records:
        return
    d, e, j = webhook_deliveries.c, webhook_events.c, jobs.c
    await conn.execute(
        update(webhook_deliveries)
        .where(d.event_id == bindparam("b_event"), d.attempt == bindparam("b_attempt"))
        .values(status_code=bindparam("b_code"), error=bindparam("b_error"), duration_ms=bindparam("b_ms")),
        [
            {
                "b_event": r.claim.event_id,
                "b_attempt": r.claim.attempt,
                "b_code": r.status_code,
                "b_error": r.error,
                "b_ms": r.duration_ms,
            }
            for r in records
        ],
    )
    await conn.execute(
        update(webhook_events)
        .where(
            e.id == bindparam("b_event"),
            e.attempts == bindparam("b_attempt"),
            e.budget_base == bindparam("b_base"),
        )
        .values(
            state=bindparam("b_state"),
            next_attempt_at=bindparam("b_next", type_=UTCDateTime()),
            claimed_until=None,
            updated_at=now,
        ),
        [
            {
                "b_event": r.claim.event_id,
                "b_attempt": r.claim.attempt,
                "b_base": r.claim.budget_base,
                "b_state": r.state.value,
                "b_next": r.next_attempt_at,
            }
            for r in records
        ],
    )
    await conn.execute(
        update(jobs)
        .where(j.id == bindparam("b_job"), j.callback_attempts < bindparam("b_attempt"))
        .values(
            callback_attempts=bindparam("b_attempt"),
            callback_status_code=bindparam("b_code"),
            callback_error=bindparam("b_error"),
            callback_sent_at=func.coalesce(bindparam("b_sent", type_=UTCDateTime()), j.callback_sent_at),
        ),
        [
            {
                "b_job": r.claim.job_id,
                "b_attempt": r.claim.attempt,
                "b_code": r.status_code,
                "b_error": r.error,
                "b_sent": now if r.delivered else None,
            }
            for r in records
        ],
    )


async def redeliver(conn: AsyncConnection, job_id: str, now: datetime) -> RowMapping | None:
    """Queue a job's event again, due now, with a fresh attempt budget; None if it has no event.

    The event keeps its id and body. A send of it still in flight finishes and is recorded, but no
    longer decides the event's state.
    """
    e = webhook_events.c
    result = await conn.execute(
        update(webhook_events)
        .where(e.job_id == job_id)
        .values(
            state=EventState.PENDING,
            next_attempt_at=now,
            budget_base=e.attempts,
            claimed_until=None,
            updated_at=now,
        )
    )
    if result.rowcount == 0:
        return None
    return (await conn.execute(select(webhook_events).where(e.job_id == job_id))).mappings().one()


async def list_deliveries(conn: AsyncConnection, job_id: str) -> Sequence[RowMapping]:
    """The finished attempts of a job's event, oldest first (an attempt in flight is not listed)."""
    d = webhook_deliveries.c
    return (
        (
            await conn.execute(
                select(d.attempt, d.at, d.status_code, d.error, d.duration_ms)
                .join(webhook_events, webhook_events.c.id == d.event_id)
                .where(
                    webhook_events.c.job_id == job_id,
                    or_(d.duration_ms.is_not(None), d.error.is_not(None)),
                )
                .order_by(d.attempt)
            )
        )
        .mappings()
        .all()
    )


async def delivery_pending(conn: AsyncConnection, job_id: str) -> bool:
    """Whether the job's event is still to be delivered (queued, retrying, or redelivered)."""
    e = webhook_events.c
    query = select(e.id).where(e.job_id == job_id, e.state == EventState.PENDING).limit(1)
    return (await conn.execute(query)).first() is not None
