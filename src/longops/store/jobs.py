"""Creating, reading, listing and cancelling jobs (batches are jobs of type ``llm_batch``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import RowMapping, bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.ids import new_id
from longops.domain.prices import PriceTable
from longops.domain.requests import BatchRequest
from longops.domain.schemas import Batch
from longops.domain.statuses import ItemStatus, JobStatus, StopReason
from longops.domain.usage import USAGE_FIELDS
from longops.store.db import Database
from longops.store.items import close_items
from longops.store.reads import DriverQuery
from longops.store.tables import batch_usage, items, jobs, provider_batches
from longops.store.transitions import finish_job
from longops.store.types import utcnow
from longops.store.usage import batch_usage_by_model, usage_sum_of
from longops.store.views import LLM_BATCH, batch_view, group_by_job

IDEMPOTENCY_WINDOW = timedelta(hours=24)
INSERT_CHUNK = 5000
ANALYZE_AFTER_ROWS = 5000


class IdempotencyConflict(Exception):
    pass


class JobNotFound(Exception):
    pass


class CancelNotAllowed(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(f"job is {status}; a finished job cannot be cancelled")
        self.status = status


@dataclass(frozen=True)
class NewBatch:
    org_id: str
    provider: str
    requests: Sequence[BatchRequest]
    endpoint: str = "/v1/messages"
    metadata: dict[str, Any] = field(default_factory=dict)
    callback_url: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None


class IdempotentCreate(Protocol):
    """What an idempotent create is matched on (a new batch, a new job)."""

    @property
    def org_id(self) -> str: ...

    @property
    def idempotency_key(self) -> str | None: ...

    @property
    def request_hash(self) -> str | None: ...


async def idempotent_match(conn: AsyncConnection, new: IdempotentCreate, now: datetime) -> str | None:
    """The id of the job an earlier call with the same key created, or None to create a new one."""
    if new.idempotency_key is None:
        return None
    row = (
        (
            await conn.execute(
                select(jobs.c.id, jobs.c.request_hash, jobs.c.created_at).where(
                    jobs.c.org_id == new.org_id, jobs.c.idempotency_key == new.idempotency_key
                )
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    if row["created_at"] < now - IDEMPOTENCY_WINDOW:
        # The key has expired: free it for this new batch.
        await conn.execute(update(jobs).where(jobs.c.id == row["id"]).values(idempotency_key=None))
        return None
    if row["request_hash"] != new.request_hash:
        raise IdempotencyConflict("this Idempotency-Key was already used with a different request body")
    return str(row["id"])


async def create_batch(db: Database, new: NewBatch) -> tuple[str, bool]:
    """Store a batch and all its items in one transaction. Returns (batch id, replayed)."""
    for attempt in range(2):
        try:
            return await _create_batch_once(db, new)
        except IntegrityError:
            # A concurrent create with the same Idempotency-Key won the unique index: replay it.
            if new.idempotency_key is None or attempt == 1:
                raise
    raise AssertionError("unreachable")


async def _create_batch_once(db: Database, new: NewBatch) -> tuple[str, bool]:
    now = utcnow()
    async with db.write() as conn:
        existing = await idempotent_match(conn, new, now)
        if existing is not None:
            return existing, True
        job_id = await _insert_batch_job(conn, new, len(new.requests), now)
        for start in range(0, len(new.requests), INSERT_CHUNK):
            await _insert_items(conn, job_id, start, new.requests[start : start + INSERT_CHUNK], now)
        await _refresh_statistics(conn, len(new.requests))
        return job_id, False


async def _refresh_statistics(conn: AsyncConnection, inserted: int) -> None:
    """On PostgreSQL, ANALYZE after a large insert rather than at autovacuum's next pass: while a
    large table still looks empty to the planner, ingestion's per-item lookups plan sequential scans."""
    if conn.dialect.name == "postgresql" and inserted >= ANALYZE_AFTER_ROWS:
        await conn.execute(text("ANALYZE items"))


async def _insert_batch_job(conn: AsyncConnection, new: NewBatch, n_total: int, now: datetime) -> str:
    """The batch's job row, ``created``; returns its new id."""
    job_id = new_id("job")
    await conn.execute(
        insert(jobs).values(
            id=job_id,
            org_id=new.org_id,
            job_type=LLM_BATCH,
            status=JobStatus.CREATED,
            provider=new.provider,
            endpoint=new.endpoint,
            metadata=new.metadata,
            callback_url=new.callback_url,
            idempotency_key=new.idempotency_key,
            request_hash=new.request_hash,
            n_total=n_total,
            created_at=now,
            updated_at=now,
        )
    )
    return job_id


async def _insert_items(
    conn: AsyncConnection, job_id: str, start: int, chunk: Sequence[BatchRequest], now: datetime
) -> None:
    await conn.execute(
        insert(items),
        [
            {
                "id": new_id("item"),
                "job_id": job_id,
                "seq": start + offset,
                "custom_id": request.custom_id,
                "params": request.params_json,
                "params_bytes": request.size_bytes,
                "status": ItemStatus.PENDING,
                "created_at": now,
                "updated_at": now,
            }
            for offset, request in enumerate(chunk)
        ],
    )


class DuplicateCustomId(Exception):
    """A request repeats the ``custom_id`` of an earlier one; ``seq`` is its position (from 0)."""

    def __init__(self, custom_id: str, seq: int) -> None:
        super().__init__(f"custom_id {custom_id!r} is a duplicate: custom_id must be unique")
        self.custom_id = custom_id
        self.seq = seq


async def create_batch_streaming(
    db: Database, new: NewBatch, chunks: AsyncIterator[Sequence[BatchRequest]]
) -> tuple[str, bool]:
    """Store a batch whose requests arrive in chunks (read from a file), in one transaction.

    Nothing is visible, to the API or to the submitter, before every chunk is stored: an exception
    from ``chunks`` (a bad line) or a repeated ``custom_id`` (:class:`DuplicateCustomId`) rolls the
    whole batch back. Memory holds one chunk. Uniqueness is the unique index's job: each chunk is
    inserted under a savepoint, and only when the index refuses one is the duplicate looked for.
    With an ``idempotency_key`` already used, the earlier batch is returned and ``chunks`` is not read.
    ``new.requests`` must be empty. Returns (batch id, replayed).
    """
    assert not new.requests
    now = utcnow()
    async with db.write() as conn:
        existing = await idempotent_match(conn, new, now)
        if existing is not None:
            return existing, True
        job_id = await _insert_batch_job(conn, new, 0, now)
        total = 0
        async for chunk in chunks:
            try:
                async with conn.begin_nested():
                    await _insert_items(conn, job_id, total, chunk, now)
            except IntegrityError:
                await _raise_duplicate(conn, job_id, total, chunk)
                raise
            total += len(chunk)
        await conn.execute(update(jobs).where(jobs.c.id == job_id).values(n_total=total))
        await _refresh_statistics(conn, total)
        return job_id, False


async def _raise_duplicate(
    conn: AsyncConnection, job_id: str, start: int, chunk: Sequence[BatchRequest]
) -> None:
    """Raise :class:`DuplicateCustomId` for the first request of ``chunk`` whose id is already taken."""
    ids = [request.custom_id for request in chunk]
    stored = set(
        (
            await conn.execute(
                select(items.c.custom_id).where(items.c.job_id == job_id, items.c.custom_id.in_(ids))
            )
        )
        .scalars()
        .all()
    )
    seen: set[str] = set()
    for offset, custom_id in enumerate(ids):
        if custom_id in stored or custom_id in seen:
            raise DuplicateCustomId(custom_id, start + offset)
        seen.add(custom_id)


async def get_job_row(conn: AsyncConnection, org_id: str, job_id: str) -> RowMapping:
    row = (
        (await conn.execute(select(jobs).where(jobs.c.id == job_id, jobs.c.org_id == org_id)))
        .mappings()
        .first()
    )
    if row is None:
        raise JobNotFound(job_id)
    return row


async def load_batches(
    conn: AsyncConnection, job_rows: Sequence[RowMapping], prices: PriceTable
) -> list[Batch]:
    """Batch objects for job rows, with their provider batches fetched in one query and their usage
    in another."""
    ids = [row["id"] for row in job_rows]
    pbs = (
        (
            await conn.execute(
                select(provider_batches)
                .where(provider_batches.c.job_id.in_(ids))
                .order_by(provider_batches.c.first_seq)
            )
        )
        .mappings()
        .all()
        if ids
        else []
    )
    by_job = group_by_job(pbs)
    usage = await batch_usage_by_model(conn, ids)
    return [batch_view(row, by_job.get(row["id"], []), usage.get(row["id"], {}), prices) for row in job_rows]


# ``GET /v1/batches/{id}``, what clients poll: one statement run on the driver (``store.reads``),
# selecting only the columns the Batch object shows. The batch's row comes once per provider batch
# (usually one), or once with NULL provider-batch columns before submission.
_PB_VIEW_COLUMNS = (
    "id",
    "provider_batch_id",
    "status",
    "processing_status",
    "request_count",
    "last_polled_at",
    "error",
    "submit_attempts",
    "next_action_at",
)
_BATCH_VIEW_COLUMNS = (
    "id",
    "status",
    "provider",
    "endpoint",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "expires_at",
    "cancel_requested_at",
    "n_total",
    "n_succeeded",
    "n_errored",
    "n_cancelled",
    "n_expired",
    "metadata",
    "callback_url",
    "callback_sent_at",
    "callback_status_code",
    "callback_error",
    "callback_attempts",
    "stop_reason",
    "error",
)
_USAGE_VIEW_COLUMNS = ("model", "requests", *USAGE_FIELDS)
_GET_BATCH = DriverQuery(
    select(
        *(jobs.c[name] for name in _BATCH_VIEW_COLUMNS),
        *(provider_batches.c[name].label(f"pb_{name}") for name in _PB_VIEW_COLUMNS),
        *(batch_usage.c[name].label(f"u_{name}") for name in _USAGE_VIEW_COLUMNS),
    )
    .select_from(
        jobs.outerjoin(provider_batches, provider_batches.c.job_id == jobs.c.id).outerjoin(
            batch_usage, batch_usage.c.job_id == jobs.c.id
        )
    )
    .where(
        jobs.c.id == bindparam("job_id"),
        jobs.c.org_id == bindparam("org_id"),
        jobs.c.job_type == LLM_BATCH,
    )
    .order_by(provider_batches.c.first_seq, batch_usage.c.model)
)


async def get_batch(db: Database, org_id: str, job_id: str, prices: PriceTable) -> Batch:
    """One statement: the job row comes once per (provider batch, model of its usage), usually once."""
    rows = await _GET_BATCH.all(db, job_id=job_id, org_id=org_id)
    if not rows:
        raise JobNotFound(job_id)
    pbs = {
        row["pb_id"]: {name: row[f"pb_{name}"] for name in _PB_VIEW_COLUMNS}
        for row in rows
        if row["pb_id"] is not None
    }
    usage = {
        row["u_model"]: usage_sum_of({name: row[f"u_{name}"] for name in _USAGE_VIEW_COLUMNS})
        for row in rows
        if row["u_model"] is not None
    }
    return batch_view(rows[0], list(pbs.values()), usage, prices)


async def list_job_rows(
    conn: AsyncConnection,
    org_id: str,
    *,
    limit: int,
    after: str | None = None,
    job_type: str | None = None,
    status: str | None = None,
    provider: str | None = None,
) -> tuple[Sequence[RowMapping], bool]:
    """Newest first (ids are time-ordered), keyset-paginated by id. Returns (rows, has_more)."""
    query = select(jobs).where(jobs.c.org_id == org_id)
    if job_type is not None:
        query = query.where(jobs.c.job_type == job_type)
    if provider is not None:
        query = query.where(jobs.c.provider == provider)
    if status is not None:
        query = query.where(jobs.c.status == status)
    if after is not None:
        query = query.where(jobs.c.id < after)
    rows = (await conn.execute(query.order_by(jobs.c.id.desc()).limit(limit + 1))).mappings().all()
    return rows[:limit], len(rows) > limit


async def cancel_job(db: Database, org_id: str, job_id: str) -> None:
    """Request cancellation (DESIGN §5): at once if nothing started, else flag it for the engine.

    Idempotent while the cancel is pending and after ``cancelled``; raises :class:`CancelNotAllowed`
    for completed, failed and expired jobs, also for one that ended so while this call ran: the
    flag is a compare-and-set on a non-terminal status, and when it finds none the job's final
    status decides the answer, so an answer never disagrees with how the job ended.
    """
    now = utcnow()
    async with db.write() as conn:
        row = await get_job_row(conn, org_id, job_id)
        status = JobStatus(row["status"])
        if status.is_terminal:
            if status != JobStatus.CANCELLED:
                raise CancelNotAllowed(status)
            return
        never_started = (
            status in (JobStatus.CREATED, JobStatus.PENDING) and row["submission_started_at"] is None
        )
        # Both writes are compare-and-sets on the job row itself, so they serialize with the engine's
        # claim of the same row (submission start, worker claim): exactly one of the two wins.
        if never_started and await finish_job(
            conn,
            job_id,
            JobStatus.CANCELLED,
            now,
            stop_reason=StopReason.CANCELLED,
            extra={"cancel_requested_at": now},
            conditions=(
                jobs.c.submission_started_at.is_(None),
                jobs.c.status.in_((JobStatus.CREATED, JobStatus.PENDING)),
            ),
        ):
            await close_items(
                conn,
                job_id,
                to=ItemStatus.CANCELLED,
                error=CANCELLED_ERROR,
                now=now,
                from_statuses=(ItemStatus.PENDING,),
            )
            return
        flagged = await conn.execute(
            update(jobs)
            .where(
                jobs.c.id == job_id,
                jobs.c.status.in_((JobStatus.CREATED, JobStatus.PENDING, JobStatus.RUNNING)),
            )
            .values(
                cancel_requested_at=func.coalesce(jobs.c.cancel_requested_at, now),
                updated_at=now,
            )
        )
        if flagged.rowcount == 1:
            return
        # The job ended between the read above and this write (on PostgreSQL the write waits for
        # the engine's commit and then finds the row terminal): answer what it ended as.
        ended = JobStatus((await get_job_row(conn, org_id, job_id))["status"])
        if ended != JobStatus.CANCELLED:
            raise CancelNotAllowed(ended)


CANCELLED_ERROR = {"type": "cancelled", "message": "the batch was cancelled before this request was sent"}
