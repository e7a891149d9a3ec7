"""Items of a batch: pages in request order, the results stream, and idempotent result ingestion."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import RowMapping, and_, bindparam, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.results import ProviderResult
from longops.domain.statuses import FINAL_ITEM_STATUSES, ItemStatus
from longops.domain.usage import USAGE_FIELDS, ZERO, Usage
from longops.store.db import Database
from longops.store.tables import items
from longops.store.transitions import add_item_counts
from longops.store.usage import UsageSum, add_usage
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
    items.c.model,
    *(items.c[name] for name in USAGE_FIELDS),
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


async def get_item_row(conn: AsyncConnection, job_id: str, item_id: str) -> RowMapping | None:
    """One item of a job with its request ``params`` (the dashboard's item view); None if unknown."""
    query = select(*_PAGE_COLUMNS, items.c.params).where(items.c.job_id == job_id, items.c.id == item_id)
    return (await conn.execute(query)).mappings().first()


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


@dataclass
class Written:
    """What one ingest write changed: per job, the items that became final, by status; and per
    (job, model), the usage of the results it counted (those that reported usage)."""

    counts: dict[str, Counter[ItemStatus]] = field(default_factory=dict)
    usage: dict[tuple[str, str], UsageSum] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(sum(counts.values()) for counts in self.counts.values())

    def add(
        self, job_id: str, status: ItemStatus, count: int, model: str | None, usage: Usage | None
    ) -> None:
        self.counts.setdefault(job_id, Counter())[status] += count
        if model is not None and usage is not None:
            previous = self.usage.get((job_id, model), UsageSum())
            self.usage[job_id, model] = UsageSum(previous.requests + count, previous.usage + usage)


async def ingest_results(
    conn: AsyncConnection, job_id: str, results: Sequence[ProviderResult], now: datetime
) -> Written:
    """Write one chunk of one job's provider results; returns what it changed.

    The one-job case of :func:`ingest_chunks`, with the job counters and the usage sums added."""
    written = await ingest_chunks(conn, {job_id: results}, now)
    await add_item_counts(conn, written.counts, now)
    await add_usage(conn, written.usage, now)
    return written


async def ingest_chunks(
    conn: AsyncConnection, chunks: Mapping[str, Sequence[ProviderResult]], now: datetime
) -> Written:
    """Write provider results of one or more jobs (``chunks`` maps a job id to its results).

    Returns what changed: per job, how many of its items became final, by status, and the usage of
    the results written; the caller adds them to the job counters
    (:func:`~longops.store.transitions.add_item_counts`) and then to the usage sums
    (:func:`~longops.store.usage.add_usage`) in the same transaction.
    Idempotent: only items still open are written, so a chunk replayed after a crash or a
    re-streamed result file changes nothing twice, and only the rows actually changed are counted
    (tokens included). An item's usage is added to what it holds (a later attempt adds to it).
    Two statements at most, whatever the number of jobs and results.
    """
    if not any(chunks.values()):
        return Written()
    if conn.dialect.name == "postgresql":
        return await _ingest_postgres(conn, chunks, now)
    return await _ingest_portable(conn, chunks, now)


def _model_key(result: ProviderResult) -> str | None:
    """The model a result is counted under: the one it names; ``unknown`` if it reports usage only."""
    if result.usage is None:
        return result.model
    return result.model or "unknown"


_TOKEN_SET = ", ".join(f"{name} = COALESCE(items.{name}, 0) + v.{name}" for name in USAGE_FIELDS)
_TOKEN_ARRAYS = ", ".join(f"CAST(:{name} AS bigint[])" for name in USAGE_FIELDS)
_TOKEN_NAMES = ", ".join(USAGE_FIELDS)
_PG_INGEST = text(
    f"""
    WITH written AS (
        UPDATE items
        SET status = v.status, response = v.response, error = v.error::json, updated_at = :now,
            model = COALESCE(v.model, items.model), {_TOKEN_SET}
        FROM unnest(CAST(:job_ids AS text[]), CAST(:custom_ids AS text[]), CAST(:statuses AS text[]),
                    CAST(:responses AS text[]), CAST(:errors AS text[]), CAST(:models AS text[]),
                    CAST(:counted AS boolean[]), {_TOKEN_ARRAYS})
             AS v(job_id, custom_id, status, response, error, model, counted, {_TOKEN_NAMES})
        WHERE items.job_id = v.job_id AND items.custom_id = v.custom_id
          AND items.job_id = ANY(CAST(:job_set AS text[]))
          AND items.status IN ('pending', 'running')
        RETURNING items.job_id, items.status, v.model, v.counted, {", ".join(f"v.{n}" for n in USAGE_FIELDS)}
    )
    SELECT job_id, status, model, counted, count(*), {", ".join(f"sum({n})" for n in USAGE_FIELDS)}
    FROM written GROUP BY job_id, status, model, counted
    """
).bindparams(bindparam("now", type_=items.c.updated_at.type))


async def _ingest_postgres(
    conn: AsyncConnection, chunks: Mapping[str, Sequence[ProviderResult]], now: datetime
) -> Written:
    """One ``UPDATE … FROM unnest(…) RETURNING``, counted by job, status and model on the server: row
    locks make a concurrent writer of the same items wait and then skip them (they are no longer
    open), so nothing is counted twice.

    ``job_id = ANY(job_set)`` repeats what the join implies: without it, a planner that thinks the
    table small may hash-join every open item of the table (seen at 10,000 items: 39 ms for 1,000
    results instead of 8); with it, the worst plan reads only these jobs' items."""
    pairs = [(job_id, r) for job_id, results in chunks.items() for r in results]
    tokens: dict[str, list[int]] = {name: [] for name in USAGE_FIELDS}
    ins, outs, reads, writes, reasoning = tokens.values()
    for _, r in pairs:  # one pass, fields spelled out: this runs once per result
        u = r.usage or ZERO
        ins.append(u.input_tokens)
        outs.append(u.output_tokens)
        reads.append(u.cache_read_input_tokens)
        writes.append(u.cache_creation_input_tokens)
        reasoning.append(u.reasoning_tokens)
    rows = await conn.execute(
        _PG_INGEST,
        {
            "now": now,
            "job_ids": [job_id for job_id, _ in pairs],
            "job_set": list(chunks),
            "custom_ids": [r.custom_id for _, r in pairs],
            "statuses": [r.status.value for _, r in pairs],
            "responses": [r.response_json for _, r in pairs],
            "errors": [json.dumps(r.error) if r.error is not None else None for _, r in pairs],
            "models": [_model_key(r) for _, r in pairs],
            "counted": [r.usage is not None for _, r in pairs],
            **tokens,
        },
    )
    written = Written()
    for job_id, status, model, counted, count, *sums in rows:
        usage = Usage(*(int(t) for t in sums)) if counted else None
        written.add(job_id, ItemStatus(status), count, model, usage)
    return written


async def _ingest_portable(
    conn: AsyncConnection, chunks: Mapping[str, Sequence[ProviderResult]], now: datetime
) -> Written:
    """SQLite: find the open items, then one executemany. The database has a single writer (the
    write transaction holds SQLite's lock), so what the first statement finds open stays open."""
    wanted = {(job_id, r.custom_id): r for job_id, results in chunks.items() for r in results}
    # (job_id IN …) AND (custom_id IN …) is a superset of the wanted pairs; the exact ones are kept.
    found = await conn.execute(
        select(items.c.job_id, items.c.custom_id).where(
            items.c.job_id.in_(list(chunks)),
            items.c.custom_id.in_({custom_id for _, custom_id in wanted}),
            items.c.status.in_(OPEN_ITEM_STATUSES),
        )
    )
    changes = [
        (job_id, wanted[job_id, custom_id]) for job_id, custom_id in found if (job_id, custom_id) in wanted
    ]
    if not changes:
        return Written()
    await conn.execute(
        update(items)
        .where(
            items.c.job_id == bindparam("b_job_id"),
            items.c.custom_id == bindparam("b_custom_id"),
            # executemany cannot expand IN lists
            or_(*(items.c.status == status for status in OPEN_ITEM_STATUSES)),
        )
        .values(
            status=bindparam("b_status"),
            response=bindparam("b_response"),
            error=bindparam("b_error", type_=items.c.error.type),
            updated_at=now,
            model=func.coalesce(bindparam("b_model", type_=items.c.model.type), items.c.model),
            **{
                name: func.coalesce(items.c[name], 0) + bindparam(f"b_{name}", type_=items.c[name].type)
                for name in USAGE_FIELDS
            },
        ),
        [
            {
                "b_job_id": job_id,
                "b_custom_id": change.custom_id,
                "b_status": change.status.value,
                "b_response": change.response_json,
                "b_error": change.error,
                "b_model": _model_key(change),
                **_usage_params(change.usage or ZERO),
            }
            for job_id, change in changes
        ],
    )
    written = Written()
    for job_id, change in changes:
        written.counts.setdefault(job_id, Counter())[change.status] += 1
    usage: dict[tuple[str, str], list[int]] = {}
    for job_id, change in changes:
        if change.usage is not None:
            sums = usage.setdefault((job_id, _model_key(change) or "unknown"), [0] * 6)
            u = change.usage
            sums[0] += 1
            sums[1] += u.input_tokens
            sums[2] += u.output_tokens
            sums[3] += u.cache_read_input_tokens
            sums[4] += u.cache_creation_input_tokens
            sums[5] += u.reasoning_tokens
    written.usage = {key: UsageSum(sums[0], Usage(*sums[1:])) for key, sums in usage.items()}
    return written


def _usage_params(usage: Usage) -> dict[str, int]:
    # Spelled out (not a loop over the fields): this runs once per result written.
    return {
        "b_input_tokens": usage.input_tokens,
        "b_output_tokens": usage.output_tokens,
        "b_cache_read_input_tokens": usage.cache_read_input_tokens,
        "b_cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "b_reasoning_tokens": usage.reasoning_tokens,
    }


@dataclass(frozen=True, slots=True)
class ItemSpan:
    """Where one provider batch's items are: its job, and the ``seq`` range they occupy."""

    pb_id: str
    job_id: str
    first_seq: int
    last_seq: int

    @classmethod
    def of(cls, pb: RowMapping) -> ItemSpan:
        """The span of a ``provider_batches`` row."""
        return cls(pb["id"], pb["job_id"], pb["first_seq"], pb["last_seq"])


async def close_items(
    conn: AsyncConnection,
    job_id: str,
    *,
    to: ItemStatus,
    error: dict[str, str],
    now: datetime,
    from_statuses: Sequence[ItemStatus] = OPEN_ITEM_STATUSES,
    span: ItemSpan | None = None,
) -> int:
    """Give the job's items still in ``from_statuses`` (only those of ``span``, if given) the final
    status ``to``, and count them on the job."""
    if span is not None:
        changed = await close_open_items(
            conn, [span], to=to, error=error, now=now, from_statuses=from_statuses
        )
    else:
        result = await conn.execute(
            update(items)
            .where(items.c.job_id == job_id, items.c.status.in_(from_statuses))
            .values(status=to, error=error, updated_at=now)
        )
        changed = {job_id: Counter({to: int(result.rowcount)})}
    await add_item_counts(conn, changed, now)
    return sum(changed.get(job_id, Counter()).values())


async def close_open_items(
    conn: AsyncConnection,
    spans: Sequence[ItemSpan],
    *,
    to: ItemStatus,
    error: dict[str, str],
    now: datetime,
    from_statuses: Sequence[ItemStatus] = OPEN_ITEM_STATUSES,
) -> dict[str, Counter[ItemStatus]]:
    """Give the items of these provider batches still in ``from_statuses`` (open ones) the final
    status ``to``; returns how many changed per job, for the caller to add to the job counters in
    the same transaction. Each batch's items are found by its ``seq`` range (``uq_items_job_id_seq``)."""
    if not spans:
        return {}
    result = await conn.execute(
        update(items)
        .where(
            or_(
                *(
                    and_(
                        items.c.job_id == span.job_id,
                        items.c.seq.between(span.first_seq, span.last_seq),
                        items.c.provider_batch_id == span.pb_id,
                    )
                    for span in spans
                )
            ),
            items.c.status.in_(from_statuses),
        )
        .values(status=to, error=error, updated_at=now)
        .returning(items.c.job_id)
    )
    changed: dict[str, Counter[ItemStatus]] = {}
    for job_id in result.scalars():
        changed.setdefault(job_id, Counter())[to] += 1
    return changed
