"""Emulated batches: the queries of :mod:`longops.engine.emulated`, which sends each item itself.

An emulated batch has one provider batch (``emulated`` = 1, ``provider_batch_id`` = its own
``pb_…`` id) covering every item, ``running`` with ``processing_status`` ``in_progress`` from the
moment it is planned until every item is final, then ``completed`` / ``ended``.

Invariants:

* ``items.due_at`` is set exactly on the open items of emulated batches: a pending item is due at
  its send time (planning, or a retry's backoff), a running one at the end of the claiming
  instance's lease, after which any instance may claim it again. A final item's ``due_at`` is
  NULL, written in the transaction that makes it final: an item already final is never claimed,
  so never sent, again.
* Claims are compare-and-sets (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so instances never claim
  the same item at once; SQLite has one engine per file). Each claim adds one to ``attempts``,
  which then names the claim: a retry releases the item only if it is still that claim's.
* Results are written in chunks, each one transaction of a constant number of statements (the
  idempotent :func:`~longops.store.items.ingest_chunks`, counters included), and a batch whose
  last open item became final in that transaction is completed and finalized in it too.
* Cancel: a batch whose cancel was requested is never claimed from again; its pending items and
  running items whose lease has expired are closed ``cancelled`` (:func:`close_cancelled`); items
  in flight end with their answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.ids import new_id
from longops.domain.results import ProviderResult
from longops.domain.statuses import ItemStatus, ProviderBatchStatus
from longops.store import provider_batches as pbs
from longops.store.db import Database, defer_commit_flush
from longops.store.items import OPEN_ITEM_STATUSES, ingest_chunks
from longops.store.jobs import CANCELLED_ERROR
from longops.store.tables import items, jobs, provider_batches
from longops.store.transitions import (
    add_item_counts,
    finalize_batches_if_done,
    lock_jobs,
    open_item_count,
    start_job,
)
from longops.store.usage import add_usage

IN_PROGRESS = "in_progress"
ENDED = "ended"


@dataclass(frozen=True, slots=True)
class ClaimedItem:
    id: str
    job_id: str
    custom_id: str
    params: str  # the request body, JSON text as stored
    attempt: int  # this claim's number (items.attempts after the claim)
    endpoint: str


@dataclass(frozen=True, slots=True)
class Final:
    """An item's final outcome, to be written."""

    job_id: str
    item_id: str
    result: ProviderResult


@dataclass(frozen=True, slots=True)
class Retry:
    """An item to send again at ``due_at`` (released only if still held by claim ``attempt``)."""

    item_id: str
    attempt: int
    due_at: datetime


async def plan(db: Database, job_id: str, provider: str, now: datetime) -> str | None:
    """Claim a created batch (the submission claim, :func:`~.provider_batches.claim_for_submission`)
    and start it as one emulated provider batch whose items are all due now, in one transaction.
    Returns the provider batch id, or None if the claim lost (cancelled, or planned elsewhere)."""
    async with db.write() as conn:
        if not await pbs.claim_for_submission(conn, job_id, now):
            return None
        first, last, count, size = (
            await conn.execute(
                select(
                    func.min(items.c.seq),
                    func.max(items.c.seq),
                    func.count(),
                    func.coalesce(func.sum(items.c.params_bytes), 0),
                ).where(items.c.job_id == job_id)
            )
        ).one()
        pb_id = new_id("pb")
        await conn.execute(
            insert(provider_batches).values(
                id=pb_id,
                job_id=job_id,
                provider=provider,
                provider_batch_id=pb_id,
                status=ProviderBatchStatus.RUNNING,
                processing_status=IN_PROGRESS,
                request_count=count,
                request_bytes=size,
                first_seq=first,
                last_seq=last,
                emulated=1,
                submit_attempts=1,
                submit_started_at=now,
                submitted_at=now,
                next_action_at=now,
                created_at=now,
                updated_at=now,
            )
        )
        await conn.execute(
            update(items)
            .where(items.c.job_id == job_id, items.c.status == ItemStatus.PENDING)
            .values(provider_batch_id=pb_id, due_at=now)
        )
        await start_job(conn, job_id, now)
        return pb_id


Cursor = tuple[datetime, str]  # (due_at, id) of the last item a claim took


async def claim_items(
    db: Database, provider: str, now: datetime, lease_until: datetime, limit: int, after: Cursor | None
) -> tuple[list[ClaimedItem], Cursor | None]:
    """Claim up to ``limit`` due items of this provider's batches that were not asked to cancel,
    in (``due_at``, id) order after ``after``: running, leased until ``lease_until``, one more
    attempt. Returns them and the cursor to pass next time.

    The cursor only saves walking what earlier claims took: an item becomes due again (a retry, a
    lease that ends) at a time later than any cursor, but a batch planned by a transaction that
    began before the last claim may be due before it, so callers start again from None now and
    then (every scan). The commit does not wait for the disk (PostgreSQL): a claim lost in a
    database crash leaves its items due again, which is what a crash of this instance would do
    (at least once for items in flight)."""
    async with db.write() as conn:
        await defer_commit_flush(conn)
        due = (
            select(items.c.id, items.c.due_at)
            .join(jobs, jobs.c.id == items.c.job_id)
            .where(
                items.c.due_at <= now,
                items.c.status.in_(OPEN_ITEM_STATUSES),
                jobs.c.provider == provider,
                jobs.c.cancel_requested_at.is_(None),
            )
            .order_by(items.c.due_at, items.c.id)
            .limit(limit)
        )
        if after is not None:
            due_after = bindparam("c_due", after[0], type_=items.c.due_at.type)
            cursor = tuple_(due_after, bindparam("c_id", after[1]))
            due = due.where(tuple_(items.c.due_at, items.c.id) > cursor)
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True, of=items)
        picked = (await conn.execute(due)).all()
        if not picked:
            return [], after
        rows = (
            await conn.execute(
                update(items)
                .where(items.c.id.in_([row.id for row in picked]))
                .values(
                    status=ItemStatus.RUNNING,
                    attempts=items.c.attempts + 1,
                    due_at=lease_until,
                    updated_at=now,
                )
                .returning(items.c.id, items.c.job_id, items.c.custom_id, items.c.params, items.c.attempts)
            )
        ).all()
        endpoints = dict(
            (
                await conn.execute(
                    select(jobs.c.id, jobs.c.endpoint).where(jobs.c.id.in_({row.job_id for row in rows}))
                )
            ).all()
        )
    claimed = [
        ClaimedItem(row.id, row.job_id, row.custom_id, row.params, row.attempts, endpoints[row.job_id])
        for row in rows
    ]
    return claimed, (picked[-1].due_at, picked[-1].id)


async def record_outcomes(
    db: Database, finals: Sequence[Final], retries: Sequence[Retry], now: datetime
) -> list[str]:
    """Write one chunk of outcomes in one transaction: final results (only into items still open,
    counted once), retries (back to pending, due at their backoff), and the completion of every
    batch whose last open item this made final. Returns the ids of those batches."""
    async with db.write() as conn:
        chunks: dict[str, list[ProviderResult]] = {}
        for final in finals:
            chunks.setdefault(final.job_id, []).append(final.result)
        # Job rows first, in id order (as every bulk writer of job rows): the counters, the
        # completion and the finalize below then add no lock out of order.
        locked = await lock_jobs(conn, chunks) if chunks else []
        written = await ingest_chunks(conn, chunks, now)
        await add_item_counts(conn, written.counts, now)
        await add_usage(conn, written.usage, now)
        if finals:
            await conn.execute(
                update(items).where(items.c.id.in_([f.item_id for f in finals])).values(due_at=None)
            )
        if retries:
            await conn.execute(
                update(items)
                .where(
                    items.c.id == bindparam("b_id"),
                    items.c.status == ItemStatus.RUNNING,
                    items.c.attempts == bindparam("b_attempt"),
                )
                .values(
                    status=ItemStatus.PENDING,
                    due_at=bindparam("b_due", type_=items.c.due_at.type),
                    updated_at=now,
                ),
                [{"b_id": r.item_id, "b_attempt": r.attempt, "b_due": r.due_at} for r in retries],
            )
        done = [
            job["id"]
            for job in locked
            if open_item_count(job) == sum(written.counts.get(job["id"], Counter()).values())
        ]
        await _complete(conn, done, now)
        return done


async def cancelled_batches(db: Database, provider: str) -> list[str]:
    """Job ids of this provider's running emulated batches whose cancel was requested."""
    async with db.read() as conn:
        rows = await conn.execute(
            select(provider_batches.c.job_id)
            .join(jobs, jobs.c.id == provider_batches.c.job_id)
            .where(
                provider_batches.c.status == ProviderBatchStatus.RUNNING,
                provider_batches.c.emulated == 1,
                jobs.c.provider == provider,
                jobs.c.cancel_requested_at.is_not(None),
            )
        )
        return list(rows.scalars())


async def close_cancelled(db: Database, job_id: str, now: datetime) -> bool:
    """Close a cancelled batch's unsent items (pending, or running under an expired lease) as
    ``cancelled``, and complete the batch if nothing is left in flight. True if it ended."""
    async with db.write() as conn:
        locked = await lock_jobs(conn, [job_id])
        if not locked:
            return False
        closed = await conn.execute(
            update(items)
            .where(
                items.c.job_id == job_id,
                items.c.due_at.is_not(None),
                or_(
                    items.c.status == ItemStatus.PENDING,
                    and_(items.c.status == ItemStatus.RUNNING, items.c.due_at <= now),
                ),
            )
            .values(status=ItemStatus.CANCELLED, error=CANCELLED_ERROR, due_at=None, updated_at=now)
        )
        count = int(closed.rowcount)
        await add_item_counts(conn, {job_id: Counter({ItemStatus.CANCELLED: count})}, now)
        if open_item_count(locked[0]) > count:
            return False
        await _complete(conn, [job_id], now)
        return True


async def _complete(conn: AsyncConnection, job_ids: Collection[str], now: datetime) -> None:
    """running → completed (CAS) for these jobs' emulated provider batches, then finalize the jobs."""
    if not job_ids:
        return
    values: dict[str, Any] = {
        "status": ProviderBatchStatus.COMPLETED,
        "processing_status": ENDED,
        "ended_at": now,
        "error": None,
        "updated_at": now,
    }
    await conn.execute(
        update(provider_batches)
        .where(
            provider_batches.c.job_id.in_(list(job_ids)),
            provider_batches.c.emulated == 1,
            provider_batches.c.status == ProviderBatchStatus.RUNNING,
        )
        .values(**values)
    )
    await finalize_batches_if_done(conn, job_ids, now)
