"""Provider batches: planning submissions, recording their outcome, and polling bookkeeping.

Invariant for submissions (DESIGN "Submitting to a provider without paying twice"): a provider batch
row with ``submit_started_at`` set and no ``provider_batch_id`` is a submission whose outcome is not
known. Nothing may send it again before :mod:`longops.engine.submitter` has reconciled it with the
provider's list of batches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.ids import new_id
from longops.domain.statuses import ItemStatus, JobStatus, ProviderBatchStatus
from longops.store.db import Database
from longops.store.items import ItemSpan
from longops.store.tables import items, jobs, provider_batches
from longops.store.views import LLM_BATCH


@dataclass(frozen=True, slots=True)
class Split:
    first_seq: int
    last_seq: int
    request_count: int
    request_bytes: int


def plan_splits(sizes: Sequence[tuple[int, int]], *, max_requests: int, max_bytes: int) -> list[Split]:
    """Cut (seq, params_bytes) pairs, in order, into runs within the provider's limits.

    Each request adds an estimated envelope overhead (custom_id and JSON framing) to its size.
    """
    splits: list[Split] = []
    first = count = total = 0
    last = -1
    for seq, size in sizes:
        cost = size + 100
        if count and (count + 1 > max_requests or total + cost > max_bytes):
            splits.append(Split(first, last, count, total))
            count = total = 0
        if not count:
            first = seq
        count += 1
        total += cost
        last = seq
    if count:
        splits.append(Split(first, last, count, total))
    return splits


async def batches_to_plan(
    db: Database,
    limit: int,
    *,
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> list[tuple[str, str]]:
    """(job id, provider) of created batches not yet claimed for submission, oldest first; of the
    providers in ``only`` (if given) and not in ``exclude``. A batch of another provider waits, and
    takes no place from these."""
    query = select(jobs.c.id, jobs.c.provider).where(
        jobs.c.job_type == LLM_BATCH,
        jobs.c.status == JobStatus.CREATED,
        jobs.c.submission_started_at.is_(None),
        jobs.c.cancel_requested_at.is_(None),
    )
    if only is not None:
        query = query.where(jobs.c.provider.in_(list(only)))
    if exclude:
        query = query.where(jobs.c.provider.not_in(list(exclude)))
    async with db.read() as conn:
        rows = await conn.execute(query.order_by(jobs.c.id).limit(limit))
        return [(job_id, provider) for job_id, provider in rows]


async def claim_for_submission(conn: AsyncConnection, job_id: str, now: datetime) -> bool:
    """Claim a created batch for submission: a compare-and-set on the job row
    (``submission_started_at`` from NULL), the same row a cancel writes, so a batch is either
    cancelled before anything is sent or claimed, never both."""
    claimed = await conn.execute(
        update(jobs)
        .where(
            jobs.c.id == job_id,
            jobs.c.status == JobStatus.CREATED,
            jobs.c.submission_started_at.is_(None),
            jobs.c.cancel_requested_at.is_(None),
        )
        .values(submission_started_at=now, updated_at=now)
    )
    return claimed.rowcount == 1


async def plan_submission(
    db: Database, job_id: str, now: datetime, *, provider: str, max_requests: int, max_bytes: int
) -> int:
    """Claim a created batch for submission and cut it into provider batches, in one transaction.

    The claim is :func:`claim_for_submission`. Returns the number of provider batches planned (0 if
    the claim lost).
    """
    async with db.write() as conn:
        if not await claim_for_submission(conn, job_id, now):
            return 0
        sizes = (
            await conn.execute(
                select(items.c.seq, items.c.params_bytes)
                .where(items.c.job_id == job_id)
                .order_by(items.c.seq)
            )
        ).all()
        splits = plan_splits([(s, b) for s, b in sizes], max_requests=max_requests, max_bytes=max_bytes)
        rows = [
            {
                "id": new_id("pb"),
                "job_id": job_id,
                "provider": provider,
                "status": ProviderBatchStatus.CREATED,
                "request_count": split.request_count,
                "request_bytes": split.request_bytes,
                "first_seq": split.first_seq,
                "last_seq": split.last_seq,
                "next_action_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for split in splits
        ]
        await conn.execute(insert(provider_batches), rows)
        await conn.execute(
            update(items)
            .where(items.c.job_id == job_id, items.c.seq.between(bindparam("b_first"), bindparam("b_last")))
            .values(provider_batch_id=bindparam("b_pb")),
            [{"b_first": r["first_seq"], "b_last": r["last_seq"], "b_pb": r["id"]} for r in rows],
        )
        return len(rows)


async def due_submissions(db: Database, now: datetime, limit: int) -> Sequence[RowMapping]:
    async with db.read() as conn:
        return (
            (
                await conn.execute(
                    select(provider_batches, jobs.c.cancel_requested_at, jobs.c.endpoint)
                    .join(jobs, jobs.c.id == provider_batches.c.job_id)
                    .where(
                        provider_batches.c.status == ProviderBatchStatus.CREATED,
                        provider_batches.c.next_action_at <= now,
                    )
                    .order_by(provider_batches.c.next_action_at)
                    .limit(limit)
                )
            )
            .mappings()
            .all()
        )


async def request_params(
    db: Database, pb: RowMapping, *, chunk_size: int = 2000
) -> AsyncIterator[tuple[str, str]]:
    """(custom_id, params JSON) of one provider batch's items, in request order, read in keyset
    chunks of its ``seq`` range, each its own short read (params do not change once stored), so
    memory holds one chunk whatever the batch's size."""
    after = pb["first_seq"] - 1
    while after < pb["last_seq"]:
        async with db.read() as conn:
            rows = (
                await conn.execute(
                    select(items.c.seq, items.c.custom_id, items.c.params)
                    .where(
                        items.c.job_id == pb["job_id"],
                        items.c.seq.between(after + 1, pb["last_seq"]),
                        items.c.provider_batch_id == pb["id"],
                    )
                    .order_by(items.c.seq)
                    .limit(chunk_size)
                )
            ).all()
        for _, custom_id, params in rows:
            yield custom_id, params
        if len(rows) < chunk_size:
            return
        after = rows[-1].seq


async def mark_submit_started(db: Database, pb_id: str, now: datetime) -> bool:
    """Record the intent to send, before the provider is called (CAS: still created, not yet known).

    ``submit_started_at`` is the time of the latest attempt: an earlier attempt was either proven
    not to have created anything or reconciled as such before this one was allowed.
    """
    async with db.write() as conn:
        result = await conn.execute(
            update(provider_batches)
            .where(
                provider_batches.c.id == pb_id,
                provider_batches.c.status == ProviderBatchStatus.CREATED,
                provider_batches.c.provider_batch_id.is_(None),
            )
            .values(
                submit_started_at=now,
                submit_attempts=provider_batches.c.submit_attempts + 1,
                submit_outcome_unknown=0,
                updated_at=now,
            )
        )
        return result.rowcount == 1


async def postpone_submission(
    db: Database, pb_id: str, now: datetime, retry_at: datetime, error: dict[str, Any]
) -> None:
    """Nothing was tried (e.g. the provider is not configured on this leader): due again at
    ``retry_at``, the attempt counted in ``poll_errors`` (unused before submission) for the backoff."""
    async with db.write() as conn:
        await conn.execute(
            update(provider_batches)
            .where(provider_batches.c.id == pb_id, provider_batches.c.status == ProviderBatchStatus.CREATED)
            .values(
                next_action_at=retry_at,
                poll_errors=provider_batches.c.poll_errors + 1,
                error=error,
                updated_at=now,
            )
        )


async def record_not_sent(
    db: Database, pb_id: str, now: datetime, retry_at: datetime, error: dict[str, Any]
) -> None:
    """The provider proved nothing was created: clear the intent and try again at ``retry_at``."""
    async with db.write() as conn:
        await conn.execute(
            update(provider_batches)
            .where(provider_batches.c.id == pb_id, provider_batches.c.status == ProviderBatchStatus.CREATED)
            .values(submit_started_at=None, staged=None, next_action_at=retry_at, error=error, updated_at=now)
        )


async def record_staged(db: Database, pb_id: str, staged: Mapping[str, str] | None) -> None:
    """What the adapter staged at the provider for the attempt under way (None: nothing any more)."""
    async with db.write() as conn:
        await conn.execute(
            update(provider_batches)
            .where(provider_batches.c.id == pb_id, provider_batches.c.status == ProviderBatchStatus.CREATED)
            .values(staged=dict(staged) if staged is not None else None)
        )


async def record_outcome_unknown(
    db: Database, pb_id: str, now: datetime, retry_at: datetime, error: dict[str, Any]
) -> None:
    """Keep the intent (``submit_started_at``): the next attempt must reconcile first."""
    async with db.write() as conn:
        await conn.execute(
            update(provider_batches)
            .where(provider_batches.c.id == pb_id, provider_batches.c.status == ProviderBatchStatus.CREATED)
            .values(submit_outcome_unknown=1, next_action_at=retry_at, error=error, updated_at=now)
        )


async def unresolved_attempts(db: Database, provider: str) -> list[tuple[str, datetime]]:
    """(provider batch id, attempt time) of every submission whose outcome is still unknown."""
    async with db.read() as conn:
        rows = await conn.execute(
            select(provider_batches.c.id, provider_batches.c.submit_started_at).where(
                provider_batches.c.provider == provider,
                provider_batches.c.status == ProviderBatchStatus.CREATED,
                provider_batches.c.provider_batch_id.is_(None),
                provider_batches.c.submit_started_at.is_not(None),
            )
        )
        return [(pb_id, started) for pb_id, started in rows]


async def known_provider_batch_ids(db: Database, provider: str, candidates: Sequence[str]) -> set[str]:
    """Which of these provider batch ids are already ours (adopted by some provider batch row)."""
    if not candidates:
        return set()
    async with db.read() as conn:
        rows = await conn.execute(
            select(provider_batches.c.provider_batch_id).where(
                provider_batches.c.provider == provider,
                provider_batches.c.provider_batch_id.in_(list(candidates)),
            )
        )
        return set(rows.scalars())


async def record_submitted(
    conn: AsyncConnection,
    pb_id: str,
    job_id: str,
    *,
    provider_batch_id: str,
    processing_status: str,
    now: datetime,
    next_poll_at: datetime,
) -> bool:
    """Store the provider's batch id in the same step that learns it; start items and the job."""
    stored = await conn.execute(
        update(provider_batches)
        .where(
            provider_batches.c.id == pb_id,
            provider_batches.c.status == ProviderBatchStatus.CREATED,
            provider_batches.c.provider_batch_id.is_(None),
        )
        .values(
            provider_batch_id=provider_batch_id,
            status=ProviderBatchStatus.RUNNING,
            processing_status=processing_status,
            submitted_at=now,
            submit_outcome_unknown=0,
            poll_errors=0,
            next_action_at=next_poll_at,
            error=None,
            updated_at=now,
        )
        .returning(provider_batches.c.first_seq, provider_batches.c.last_seq)
    )
    seqs = stored.first()
    if seqs is None:
        return False
    await conn.execute(
        update(items)
        .where(
            items.c.job_id == job_id,
            items.c.seq.between(seqs.first_seq, seqs.last_seq),  # uq_items_job_id_seq
            items.c.status == ItemStatus.PENDING,
            items.c.provider_batch_id == pb_id,
        )
        .values(status=ItemStatus.RUNNING, attempts=items.c.attempts + 1, updated_at=now)
    )
    return True


async def fail_provider_batch(
    conn: AsyncConnection, pb_id: str, error: dict[str, Any], now: datetime
) -> bool:
    result = await conn.execute(
        update(provider_batches)
        .where(
            provider_batches.c.id == pb_id,
            provider_batches.c.status.in_((ProviderBatchStatus.CREATED, ProviderBatchStatus.RUNNING)),
        )
        .values(status=ProviderBatchStatus.FAILED, error=error, ended_at=now, updated_at=now)
    )
    return result.rowcount == 1


async def complete_provider_batches(
    conn: AsyncConnection, ended: Mapping[str, str], now: datetime
) -> list[ItemSpan]:
    """running → completed (CAS), once every result is ingested; this is also their last poll.

    ``ended`` maps a provider batch id to the provider's final word for it (``processing_status``).
    Returns the item spans of those this call completed: one statement per distinct final word
    (usually one)."""
    by_status: dict[str, list[str]] = {}
    for pb_id, processing_status in ended.items():
        by_status.setdefault(processing_status, []).append(pb_id)
    completed: list[ItemSpan] = []
    for processing_status, pb_ids in by_status.items():
        result = await conn.execute(
            update(provider_batches)
            .where(
                provider_batches.c.id.in_(pb_ids),
                provider_batches.c.status == ProviderBatchStatus.RUNNING,
            )
            .values(
                status=ProviderBatchStatus.COMPLETED,
                processing_status=processing_status,
                last_polled_at=now,
                poll_errors=0,
                ended_at=now,
                error=None,
                updated_at=now,
            )
            .returning(
                provider_batches.c.id,
                provider_batches.c.job_id,
                provider_batches.c.first_seq,
                provider_batches.c.last_seq,
            )
        )
        completed.extend(ItemSpan(*row) for row in result)
    return completed


async def due_polls(db: Database, now: datetime, limit: int) -> Sequence[RowMapping]:
    """Running provider batches that are due at a provider, oldest poll first (never polled ones
    first of all); emulated ones are run by :mod:`longops.engine.emulated` instead."""
    async with db.read() as conn:
        return (
            (
                await conn.execute(
                    select(provider_batches, jobs.c.cancel_requested_at)
                    .join(jobs, jobs.c.id == provider_batches.c.job_id)
                    .where(
                        provider_batches.c.status == ProviderBatchStatus.RUNNING,
                        provider_batches.c.next_action_at <= now,
                        provider_batches.c.emulated == 0,  # run by longops, not at a provider
                    )
                    .order_by(provider_batches.c.last_polled_at.asc().nulls_first(), provider_batches.c.id)
                    .limit(limit)
                )
            )
            .mappings()
            .all()
        )


@dataclass(frozen=True, slots=True)
class PollRecord:
    pb_id: str
    processing_status: str | None
    next_poll_at: datetime
    poll_errors: int
    error: dict[str, Any] | None
    cancel_sent: bool = False


async def record_polls(db: Database, records: Sequence[PollRecord], now: datetime) -> None:
    """One executemany for the whole cycle: poll time, the provider's word, next due time, errors."""
    if not records:
        return
    async with db.write() as conn:
        await conn.execute(
            update(provider_batches)
            .where(
                provider_batches.c.id == bindparam("b_id"),
                provider_batches.c.status == ProviderBatchStatus.RUNNING,
            )
            .values(
                processing_status=func.coalesce(
                    bindparam("b_processing_status"), provider_batches.c.processing_status
                ),
                last_polled_at=now,
                next_action_at=bindparam("b_next", type_=provider_batches.c.next_action_at.type),
                poll_errors=bindparam("b_errors"),
                error=bindparam("b_error", type_=provider_batches.c.error.type),
                cancel_sent_at=func.coalesce(
                    provider_batches.c.cancel_sent_at,
                    bindparam("b_cancel_sent", type_=provider_batches.c.cancel_sent_at.type),
                ),
                updated_at=now,
            ),
            [
                {
                    "b_id": r.pb_id,
                    "b_processing_status": r.processing_status,
                    "b_next": r.next_poll_at,
                    "b_errors": r.poll_errors,
                    "b_error": r.error,
                    "b_cancel_sent": now if r.cancel_sent else None,
                }
                for r in records
            ],
        )
