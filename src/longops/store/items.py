"""Items of a batch: pages in request order, the results stream, and idempotent result ingestion."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from sqlalchemy import RowMapping, bindparam, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.statuses import FINAL_ITEM_STATUSES, ItemStatus
from longops.providers.base import ProviderResult
from longops.store.db import Database
from longops.store.tables import item_status_in, items
from longops.store.transitions import add_item_counts
from longops.store.views import result_line

OPEN_ITEM_STATUSES = (ItemStatus.PENDING, ItemStatus.RUNNING)
_PAGE_COLUMNS = (
    items.c.id,
    items.c.seq,
    items.c.custom_id,
    items.c.status,
    items.c.provider_batch_id,
    items.c.response,
    items.c.error,
    items.c.attempts,
    items.c.created_at,
    items.c.updated_at,
)


async def list_item_rows(
    conn: AsyncConnection, job_id: str, *, limit: int, after: str | None, status: str | None
) -> tuple[Sequence[RowMapping], bool]:
    """Items in request order, keyset-paginated by ``seq`` (``after`` is the last item id seen)."""
    query = select(*_PAGE_COLUMNS).where(items.c.job_id == job_id)
    if status is not None:
        query = query.where(items.c.status == status)
    if after is not None:
        after_seq = select(items.c.seq).where(items.c.job_id == job_id, items.c.id == after).scalar_subquery()
        query = query.where(items.c.seq > after_seq)
    rows = (await conn.execute(query.order_by(items.c.seq).limit(limit + 1))).mappings().all()
    return rows[:limit], len(rows) > limit


async def stream_result_lines(db: Database, job_id: str, chunk_size: int = 2000) -> AsyncIterator[str]:
    """NDJSON lines of every final item, in request order, read in keyset chunks (bounded memory).

    Each chunk is its own short read transaction, so a slow client never holds a transaction open.
    """
    last_seq = -1
    while True:
        async with db.read() as conn:
            rows = (
                (
                    await conn.execute(
                        select(
                            items.c.seq, items.c.custom_id, items.c.status, items.c.response, items.c.error
                        )
                        .where(
                            items.c.job_id == job_id,
                            items.c.seq > last_seq,
                            items.c.status.in_(FINAL_ITEM_STATUSES),
                        )
                        .order_by(items.c.seq)
                        .limit(chunk_size)
                    )
                )
                .mappings()
                .all()
            )
        if not rows:
            return
        yield "".join(result_line(row) for row in rows)
        last_seq = rows[-1]["seq"]


async def ingest_results(
    conn: AsyncConnection, job_id: str, results: Sequence[ProviderResult], now: datetime
) -> Counter[ItemStatus]:
    """Write one chunk of provider results; returns how many items became final, by status.

    Idempotent: only items still open are written, so a chunk replayed after a crash or a re-streamed
    result file changes nothing twice, and only the rows actually changed are added to the job's
    counters (in the same transaction). A constant number of statements per chunk, whatever its size.
    """
    if not results:
        return Counter()
    if conn.dialect.name == "postgresql":
        changed = await _ingest_postgres(conn, job_id, results, now)
    else:
        changed = await _ingest_portable(conn, job_id, results, now)
    await add_item_counts(conn, job_id, changed, now)
    return changed


_PG_INGEST = text(
    """
    UPDATE items
    SET status = v.status, response = v.response, error = v.error::json, updated_at = :now
    FROM unnest(CAST(:custom_ids AS text[]), CAST(:statuses AS text[]), CAST(:responses AS text[]),
                CAST(:errors AS text[])) AS v(custom_id, status, response, error)
    WHERE items.job_id = :job_id AND items.custom_id = v.custom_id AND items.status IN ('pending', 'running')
    RETURNING items.status
    """
).bindparams(bindparam("now", type_=items.c.updated_at.type))


async def _ingest_postgres(
    conn: AsyncConnection, job_id: str, results: Sequence[ProviderResult], now: datetime
) -> Counter[ItemStatus]:
    """One ``UPDATE … FROM unnest(…) RETURNING``: row locks make a concurrent writer of the same
    items wait and then skip them (they are no longer open), so nothing is counted twice."""
    rows = await conn.execute(
        _PG_INGEST,
        {
            "now": now,
            "job_id": job_id,
            "custom_ids": [r.custom_id for r in results],
            "statuses": [r.status.value for r in results],
            "responses": [r.response_json for r in results],
            "errors": [json.dumps(r.error) if r.error is not None else None for r in results],
        },
    )
    return Counter(ItemStatus(status) for status in rows.scalars())


async def _ingest_portable(
    conn: AsyncConnection, job_id: str, results: Sequence[ProviderResult], now: datetime
) -> Counter[ItemStatus]:
    """SQLite: find the open items, then one executemany. The database has a single writer (the
    write transaction holds SQLite's lock), so what the first statement finds open stays open."""
    by_custom_id = {result.custom_id: result for result in results}
    open_ids = (
        await conn.execute(
            select(items.c.custom_id).where(
                items.c.job_id == job_id,
                items.c.custom_id.in_(list(by_custom_id)),
                item_status_in(OPEN_ITEM_STATUSES),
            )
        )
    ).scalars()
    changes = [by_custom_id[custom_id] for custom_id in open_ids]
    if not changes:
        return Counter()
    await conn.execute(
        update(items)
        .where(
            items.c.job_id == job_id,
            items.c.custom_id == bindparam("b_custom_id"),
            # executemany cannot expand IN lists
            or_(*(items.c.status == status for status in OPEN_ITEM_STATUSES)),
        )
        .values(
            status=bindparam("b_status"),
            response=bindparam("b_response"),
            error=bindparam("b_error", type_=items.c.error.type),
            updated_at=now,
        ),
        [
            {
                "b_custom_id": change.custom_id,
                "b_status": change.status.value,
                "b_response": change.response_json,
                "b_error": change.error,
            }
            for change in changes
        ],
    )
    return Counter(change.status for change in changes)


async def close_items(
    conn: AsyncConnection,
    job_id: str,
    *,
    to: ItemStatus,
    error: dict[str, str],
    now: datetime,
    from_statuses: Sequence[ItemStatus] = OPEN_ITEM_STATUSES,
    pb_id: str | None = None,
) -> int:
    """Give items still in ``from_statuses`` the final status ``to`` and count them on the job.

    The job's open items are found through ``ix_items_job_id_seq_open`` (``from_statuses`` are open
    statuses), so a provider batch that ends with every result written costs an index probe."""
    query = update(items).where(items.c.job_id == job_id, item_status_in(from_statuses))
    if pb_id is not None:
        query = query.where(items.c.provider_batch_id == pb_id)
    result = await conn.execute(query.values(status=to, error=error, updated_at=now))
    changed = int(result.rowcount)
    await add_item_counts(conn, job_id, Counter({to: changed}), now)
    return changed
