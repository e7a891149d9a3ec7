"""The fast paths of issue 7 give what the ordinary paths give, on both databases.

* ``job_queue.create_jobs_bulk`` stores the same rows as ``create_job``, one per job, in order.
* ``jobs.get_batch`` and ``api_keys.org_for_key`` (one statement on the driver, ``store.reads``)
  answer as the SQLAlchemy reads do, through a batch's life: created, running with provider batches,
  completed; for another organization, a generic job and a revoked key they find nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from longops.domain.price_table import BUNDLED_PRICES
from longops.domain.prices import PriceTable
from longops.domain.requests import BatchRequest
from longops.store import api_keys
from longops.store import job_queue as queue
from longops.store import jobs as job_store
from longops.store.db import Database
from longops.store.tables import jobs, provider_batches
from longops.store.types import utcnow

PRICES = PriceTable(BUNDLED_PRICES)


def _comparable(row: Any) -> dict[str, Any]:
    ignored = {"id", "created_at", "updated_at", "due_at"}
    return {key: value for key, value in dict(row).items() if key not in ignored}


async def test_bulk_create_stores_what_create_job_stores(db: Database) -> None:
    def new(n: int) -> queue.NewJob:
        return queue.NewJob(
            org_id="acme",
            job_type="export",
            input={"n": n, "text": "é\x01", "nested": [1, None, {"a": True}]} if n % 2 else None,
            max_attempts=3,
            timeout_seconds=60.5,
            metadata={"team": "search"} if n % 3 else {},
            callback_url="https://example.com/hook" if n % 5 == 0 else None,
        )

    single, _ = await queue.create_job(db, new(7))
    ids = await queue.create_jobs_bulk(db, [new(n) for n in range(12)])
    assert len(set(ids)) == 12
    async with db.read() as conn:
        rows = (await conn.execute(jobs.select().where(jobs.c.id.in_(ids)))).mappings().all()
    by_id = {row["id"]: row for row in rows}
    assert [by_id[job_id]["input"] for job_id in ids] == [new(n).input for n in range(12)]
    assert _comparable(by_id[ids[7]]) == _comparable(single)
    assert all(row["status"] == "pending" and row["due_at"] is not None for row in rows)
    assert await queue.create_jobs_bulk(db, []) == []
    with pytest.raises(ValueError):
        await queue.create_jobs_bulk(db, [queue.NewJob("acme", "export", None, 1, 1.0, idempotency_key="k")])


async def _batch_through_sqlalchemy(db: Database, org: str, batch_id: str) -> Any:
    async with db.read() as conn:
        row = await job_store.get_job_row(conn, org, batch_id)
        return (await job_store.load_batches(conn, [row], PRICES))[0]


async def test_get_batch_on_the_driver_matches_sqlalchemy(db: Database) -> None:
    requests = [BatchRequest(f"r{i}", '{"max_tokens": 1}') for i in range(5)]
    batch_id, _ = await job_store.create_batch(
        db, job_store.NewBatch(org_id="acme", provider="simulator", requests=requests, metadata={"k": [1]})
    )
    assert await job_store.get_batch(db, "acme", batch_id, PRICES) == await _batch_through_sqlalchemy(
        db, "acme", batch_id
    )

    now = utcnow()
    async with db.write() as conn:
        for seq, (first, last) in enumerate([(2, 4), (0, 1)]):  # inserted out of order
            await conn.execute(
                provider_batches.insert().values(
                    id=f"pb_{seq}",
                    job_id=batch_id,
                    provider="simulator",
                    provider_batch_id=f"msgbatch_{seq}",
                    status="running",
                    processing_status="in_progress",
                    request_count=last - first + 1,
                    request_bytes=10,
                    first_seq=first,
                    last_seq=last,
                    next_action_at=now,
                    last_polled_at=now if seq else None,
                    error={"type": "overloaded_error", "message": "x"} if seq else None,
                    created_at=now,
                    updated_at=now,
                )
            )
        await conn.execute(
            jobs.update()
            .where(jobs.c.id == batch_id)
            .values(status="completed", n_succeeded=4, n_errored=1, completed_at=now, started_at=now)
        )
    fast = await job_store.get_batch(db, "acme", batch_id, PRICES)
    assert fast == await _batch_through_sqlalchemy(db, "acme", batch_id)
    assert [pb.provider_batch_id for pb in fast.provider_batches] == ["msgbatch_1", "msgbatch_0"]
    assert fast.completed_at is not None and fast.completed_at.utcoffset() is not None

    with pytest.raises(job_store.JobNotFound):
        await job_store.get_batch(db, "other-org", batch_id, PRICES)
    generic, _ = await queue.create_job(db, queue.NewJob("acme", "export", None, 1, 1.0))
    with pytest.raises(job_store.JobNotFound):
        await job_store.get_batch(db, "acme", generic["id"], PRICES)


async def test_key_lookup_on_the_driver(db: Database) -> None:
    created = await api_keys.create_key(db, "acme")
    assert await api_keys.org_for_key(db, created.secret) == "acme"
    assert (
        await api_keys.org_for_key(db, created.secret[:-1] + ("A" if created.secret[-1] != "A" else "B"))
        is None
    )
    assert await api_keys.org_for_key(db, "not a key") is None
    await api_keys.revoke_key(db, created.record.id)
    assert await api_keys.org_for_key(db, created.secret) is None
