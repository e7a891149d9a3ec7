"""Retention queries: terminal jobs older than the window, deleted in bounded chunks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.statuses import TERMINAL_JOB_STATUSES
from longops.store.tables import items, jobs


def _expired(cutoff: datetime) -> ColumnElement[bool]:
    return and_(jobs.c.completed_at < cutoff, jobs.c.status.in_(sorted(TERMINAL_JOB_STATUSES)))


async def expired_jobs(conn: AsyncConnection, cutoff: datetime, limit: int) -> list[str]:
    """Ids of terminal jobs completed before ``cutoff``, oldest first, at most ``limit``."""
    rows = await conn.execute(
        select(jobs.c.id).where(_expired(cutoff)).order_by(jobs.c.completed_at).limit(limit)
    )
    return list(rows.scalars())


async def delete_items(conn: AsyncConnection, job_ids: Sequence[str], limit: int) -> int:
    """Delete at most ``limit`` items of these jobs; returns how many."""
    chunk = select(items.c.id).where(items.c.job_id.in_(list(job_ids))).limit(limit)
    result = await conn.execute(delete(items).where(items.c.id.in_(chunk)))
    return int(result.rowcount)


async def delete_jobs(conn: AsyncConnection, job_ids: Sequence[str], cutoff: datetime) -> int:
    """Delete these jobs if they are still terminal and older than ``cutoff`` (their provider batches,
    webhook events and deliveries go with them: ON DELETE CASCADE)."""
    result = await conn.execute(delete(jobs).where(jobs.c.id.in_(list(job_ids)), _expired(cutoff)))
    return int(result.rowcount)
