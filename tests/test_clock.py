"""The injectable clock: components given a ``ManualClock`` see time move only when the test moves it.

Here the workers' retry backoff (60 s and up to 20 % jitter) is passed by advancing the clock, not
by waiting for it: the test takes as long on a busy machine as on an idle one, and cannot race it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from longops.domain.clock import ManualClock
from longops.engine.workers import Workers
from longops.handlers import load_handlers, registered_handlers
from longops.settings import Settings
from longops.store import job_queue as queue
from longops.store.db import Database
from longops.store.tables import jobs
from tests.support.receiver import wait_until


def test_a_manual_clock_moves_only_forward_and_only_when_told() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock = ManualClock(start)
    assert clock() == clock() == start
    assert clock.advance(1.5) == start + timedelta(seconds=1.5) == clock()
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    assert clock() == start + timedelta(seconds=1.5)
    with pytest.raises(ValueError, match="aware start time"):
        ManualClock(datetime(2030, 1, 1))


async def job_row(db: Database, job_id: str) -> Any:
    async with db.read() as conn:
        return (await conn.execute(select(jobs).where(jobs.c.id == job_id))).mappings().one()


async def test_workers_retry_a_failed_attempt_when_the_clock_passes_its_backoff(
    db: Database, database_url: str
) -> None:
    load_handlers("tests.handlers_example")
    settings = Settings(database_url=database_url, job_retry_backoff_seconds=60.0, worker_poll_seconds=0.01)  # type: ignore[call-arg]
    clock = ManualClock()
    workers = Workers(db, settings, {"flaky": registered_handlers()["flaky"]}, owner="w1", clock=clock)
    new = queue.NewJob(
        org_id="o", job_type="flaky", input={"succeed_on": 2}, max_attempts=2, timeout_seconds=30
    )
    created, _ = await queue.create_job(db, new, clock=clock)
    job_id = created["id"]

    async def retry_recorded() -> bool:
        await workers.run_once()
        row = await job_row(db, job_id)
        return bool(row["attempts"] == 1 and row["lease_owner"] is None and row["error"] is not None)

    await wait_until(retry_recorded, what="the first attempt to fail and be scheduled again")
    due_at = (await job_row(db, job_id))["due_at"]
    assert timedelta(seconds=60) <= due_at - clock() <= timedelta(seconds=72)  # backoff plus jitter

    clock.advance(59)
    for _ in range(5):  # rounds that claim find nothing due yet
        await workers.run_once()
    row = await job_row(db, job_id)
    assert (row["status"], row["attempts"], row["lease_owner"]) == ("running", 1, None)  # not claimed

    clock.advance(13)

    async def completed() -> bool:
        await workers.run_once()
        return bool((await job_row(db, job_id))["status"] == "completed")

    await wait_until(completed, what="the second attempt to run and complete")
    row = await job_row(db, job_id)
    assert (row["attempts"], row["result"]) == (2, {"attempt": 2})
    assert row["completed_at"] == clock()  # dated by the injected clock, not the machine's
