"""Completing ended provider batches, many in one transaction.

When a provider batch has ended and its results have been streamed, the last chunk of results is
written and the provider batch completed in the same transaction, so a crash between the two
cannot leave a completed provider batch with results missing. Small batches (one chunk of results
each) are completed together: one transaction, and a constant number of statements, for all the
batches that ended in a poll cycle, instead of about ten statements per batch.

Within the transaction, in order: every result is written (only into items still open), the
provider batches go running → completed (a compare-and-set: one that another writer completed
first is left alone), the job counters and then the usage sums get exactly the rows that changed
(:mod:`longops.store.usage`), items the provider
returned nothing for are errored (looked for only in jobs whose counters, read under the lock,
still show open items), and each job whose provider batches have all ended is finalized (its
terminal status and webhook event).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.results import ProviderResult
from longops.domain.statuses import ItemStatus
from longops.store.items import Written, close_open_items, ingest_chunks
from longops.store.provider_batches import complete_provider_batches
from longops.store.transitions import (
    add_item_counts,
    finalize_batches_if_done,
    lock_jobs,
    open_item_count,
)
from longops.store.usage import add_usage

MISSING_RESULT = {"type": "missing_result", "message": "the provider returned no result for this request"}


@dataclass(frozen=True, slots=True)
class EndedBatch:
    """A provider batch whose result stream has been read to its end, with its last chunk."""

    pb_id: str
    job_id: str
    processing_status: str  # the provider's final word, e.g. "ended"
    last_results: Sequence[ProviderResult]
    provider: str


async def complete_ended_batches(
    conn: AsyncConnection, ended: Sequence[EndedBatch], now: datetime
) -> Written:
    """Write the last chunks and complete these provider batches; returns what the chunks changed
    (results already written by an earlier attempt are not counted again)."""
    chunks: dict[str, list[ProviderResult]] = {}
    for batch in ended:
        chunks.setdefault(batch.job_id, []).extend(batch.last_results)
    # Every job row this transaction may write, locked first and in id order: the counters and the
    # finalize below then add no lock out of order, so two groups in flight cannot deadlock.
    locked = await lock_jobs(conn, chunks)
    written = await ingest_chunks(conn, chunks, now)
    completed = await complete_provider_batches(
        conn, {batch.pb_id: batch.processing_status for batch in ended}, now
    )
    await add_item_counts(conn, written.counts, now)
    await add_usage(conn, written.usage, now)
    # Open items left: the counters as read under the lock (no one else can change them now), less
    # what this transaction has just made final.
    incomplete = {
        job["id"]
        for job in locked
        if open_item_count(job) > sum(written.counts.get(job["id"], Counter()).values())
    }
    missing = await close_open_items(
        conn,
        [span for span in completed if span.job_id in incomplete],
        to=ItemStatus.ERRORED,
        error=MISSING_RESULT,
        now=now,
    )
    await add_item_counts(conn, missing, now)
    await finalize_batches_if_done(conn, {span.job_id for span in completed}, now)
    return written
