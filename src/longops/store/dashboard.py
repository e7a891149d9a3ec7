"""What the dashboard's overview reads beyond the REST objects: counts per status, the batches that
need attention, the leader and the last poll.

Invariant: nothing here reads ``items``. Every figure comes from the jobs' stored request counters,
the provider batches and the leadership terms, so the overview costs the same for a batch of ten
items as for one of a million, however often it refreshes. Every query but the leader's (a property
of the deployment, not of an organization) is scoped to one organization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.statuses import JobStatus, ProviderBatchStatus
from longops.store.tables import jobs, leader_terms, provider_batches
from longops.store.views import LLM_BATCH


@dataclass(frozen=True, slots=True)
class StatusCounts:
    batches: dict[str, int]
    jobs: dict[str, int]  # generic jobs only: batches are counted above


@dataclass(frozen=True, slots=True)
class Leader:
    instance: str
    since: datetime


async def status_counts(conn: AsyncConnection, org_id: str) -> StatusCounts:
    is_batch = jobs.c.job_type == LLM_BATCH
    query = (
        select(is_batch.label("is_batch"), jobs.c.status, func.count().label("n"))
        .where(jobs.c.org_id == org_id)
        .group_by(is_batch, jobs.c.status)
    )
    counts = StatusCounts(batches={}, jobs={})
    for row in (await conn.execute(query)).mappings():
        (counts.batches if row["is_batch"] else counts.jobs)[row["status"]] = row["n"]
    return counts


async def batches_needing_attention(conn: AsyncConnection, org_id: str, limit: int) -> Sequence[RowMapping]:
    """Newest first: failed batches, batches with errored items, and batches one of whose provider
    batches failed or whose last poll or ingestion failed (``ingest_failed``)."""
    troubled_part = exists().where(
        provider_batches.c.job_id == jobs.c.id,
        or_(provider_batches.c.status == ProviderBatchStatus.FAILED, provider_batches.c.poll_errors > 0),
    )
    query = (
        select(jobs)
        .where(
            jobs.c.org_id == org_id,
            jobs.c.job_type == LLM_BATCH,
            or_(jobs.c.status == JobStatus.FAILED, jobs.c.n_errored > 0, troubled_part),
        )
        .order_by(jobs.c.id.desc())
        .limit(limit)
    )
    return (await conn.execute(query)).mappings().all()


async def current_leader(conn: AsyncConnection) -> Leader | None:
    """The instance holding the open leadership term, if any (SQLite's single engine included)."""
    query = (
        select(leader_terms.c.instance, leader_terms.c.acquired_at)
        .where(leader_terms.c.released_at.is_(None))
        .order_by(leader_terms.c.term.desc())
        .limit(1)
    )
    row = (await conn.execute(query)).mappings().first()
    return None if row is None else Leader(instance=row["instance"], since=row["acquired_at"])


async def last_poll(conn: AsyncConnection, org_id: str) -> datetime | None:
    """When a provider batch of this organization was last polled."""
    query = (
        select(func.max(provider_batches.c.last_polled_at))
        .select_from(provider_batches.join(jobs, jobs.c.id == provider_batches.c.job_id))
        .where(jobs.c.org_id == org_id)
    )
    value: datetime | None = (await conn.execute(query)).scalar()
    return value
