"""The leader fence (store/terms.py): once a new term has begun, a deposed leader writes nothing.

Two leaders are played in one process by two fenced views of one database, each with its own term.
The deposed one's submitter must neither record a submission nor call the provider; on PostgreSQL,
a new term also waits for a write transaction of the old term that is still in flight.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Insert, select

from longops.engine.metrics import Metrics
from longops.engine.submitter import Submitter
from longops.store.db import Database
from longops.store.tables import jobs
from longops.store.terms import Deposed, begin_term, term_fence
from longops.store.types import utcnow
from tests.support.harness import Harness, harness, requests_for
from tests.support.postgres import dsn
from tests.support.receiver import wait_until

LOCK = "fence-test"


def submitter_of(h: Harness, term: int) -> Submitter:
    return Submitter(h.db.fenced(term_fence(term)), h.registry, h.settings, Metrics())


async def test_a_deposed_leaders_submitter_writes_nothing_and_calls_no_provider(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        old_term = await begin_term(h.db, LOCK, "old-leader", utcnow())
        deposed = submitter_of(h, old_term)
        batch = await h.batch((await h.create_batch(requests_for("a", "b")))["id"])
        new_term = await begin_term(h.db, LOCK, "new-leader", utcnow())  # the old leader is deposed

        with pytest.raises(Deposed, match=f"term {old_term} has ended"):
            await deposed.run_once()
        assert (await h.sim_stats())["calls"].get("create", 0) == 0, "nothing reached the provider"
        assert await h.batch(batch["id"]) == batch, "the batch is as it was created"
        assert batch["status"] == "created"

        await submitter_of(h, new_term).run_once()  # the current leader's writes go through
        assert (await h.batch(batch["id"]))["status"] == "running"
        assert (await h.sim_stats())["calls"]["create"] == 1


def new_job(job_id: str) -> Insert:
    now = utcnow()
    return jobs.insert().values(
        id=job_id,
        org_id="o",
        job_type="report",
        status="pending",
        metadata={},
        created_at=now,
        updated_at=now,
    )


async def insert_job(db: Database, job_id: str) -> None:
    async with db.write() as conn:
        await conn.execute(new_job(job_id))


async def job_ids(db: Database) -> list[str]:
    async with db.read() as conn:
        return list((await conn.execute(select(jobs.c.id))).scalars())


async def test_a_deposed_leaders_write_transaction_aborts_and_leaves_no_row(db: Database) -> None:
    old_view = db.fenced(term_fence(await begin_term(db, LOCK, "old-leader", utcnow())))
    await insert_job(old_view, "job_before")  # while it leads, its writes commit
    await begin_term(db, LOCK, "new-leader", utcnow())
    with pytest.raises(Deposed):
        await insert_job(old_view, "job_after")
    assert await job_ids(db) == ["job_before"]


async def test_a_new_term_waits_for_the_old_terms_write_in_flight(db: Database, database_url: str) -> None:
    """PostgreSQL: the old leader's open write transaction holds its term row ``FOR SHARE``; the new
    term's start blocks on it (seen in ``pg_stat_activity``) and completes once that transaction commits."""
    if not db.is_postgres:
        pytest.skip("SQLite serializes every write transaction: there is no write in flight to wait for")
    old_view = db.fenced(term_fence(await begin_term(db, LOCK, "old-leader", utcnow())))
    async with old_view.write() as conn:  # the fence ran: the term row is held FOR SHARE
        starting = asyncio.create_task(begin_term(db, LOCK, "new-leader", utcnow()))
        await wait_until(lambda: lock_waiters(database_url), what="the new term to wait for the lock")
        assert not starting.done()
        await conn.execute(new_job("job_in_flight"))
    await starting  # the old leader's transaction committed; now the new term begins
    assert await job_ids(db) == ["job_in_flight"]
    with pytest.raises(Deposed):
        await insert_job(old_view, "job_after")


async def lock_waiters(url: str) -> bool:
    """Whether some session of this database is waiting for a row lock."""
    conn = await asyncpg.connect(dsn(url))
    try:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return bool(waiting)
