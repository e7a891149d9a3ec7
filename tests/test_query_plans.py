"""Query plans on PostgreSQL (EXPLAIN ANALYZE), in the style of PgQueuer's: the engine's due queries
and the API's pages use their indexes and read rows in proportion to what they return, not to the
size of the table.

The statements are the store's own, captured as they are sent (``StatementCounter``) while the
store functions run, then explained with the same parameters. The tables hold thousands of rows
that must not be read: batches long ended, other batches' items, other organizations' jobs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import insert

from longops.domain.requests import parse_requests
from longops.store import job_queue as queue
from longops.store import jobs as job_store
from longops.store import provider_batches as pbs
from longops.store.db import Database, open_database
from longops.store.items import list_item_rows
from longops.store.tables import provider_batches
from longops.store.types import utcnow
from tests.support.harness import requests_for
from tests.support.postgres import database_from_template
from tests.support.statements import StatementCounter

ENDED_PROVIDER_BATCHES = 3000
DUE_PROVIDER_BATCHES = 8  # of each of the submitter's and the poller's states
ITEMS_PER_BATCH = 3000
OTHER_ORG_JOBS = 4000
PAGE = 20


@pytest.fixture(scope="module")
def plans_url(postgres_server_url: str, postgres_template_url: str) -> Iterator[str]:
    with database_from_template(postgres_server_url, postgres_template_url) as url:
        yield url


@pytest.fixture
async def db(plans_url: str) -> AsyncIterator[Database]:
    database = open_database(plans_url)
    try:
        if not await _filled(database):
            await _fill(database)
        yield database
    finally:
        await database.dispose()


async def _filled(db: Database) -> bool:
    async with db.read() as conn:
        return bool((await conn.exec_driver_sql("SELECT count(*) FROM provider_batches")).scalar_one())


async def _fill(db: Database) -> None:
    """Old batches and other organizations' jobs first, then the batch whose provider batches are due
    (so its id sorts after all of them: a plan that walked jobs in id order would read them all)."""
    others = [
        queue.NewJob(
            org_id=f"org{i % 4}", job_type="report", input={"n": i}, max_attempts=1, timeout_seconds=60
        )
        for i in range(OTHER_ORG_JOBS)
    ]
    ended_batch = await _batch(db)
    await queue.create_jobs_bulk(db, others)
    acme = [
        queue.NewJob(org_id="acme", job_type="report", input={"n": i}, max_attempts=1, timeout_seconds=60)
        for i in range(PAGE * 3)
    ]
    await queue.create_jobs_bulk(db, acme)
    due_batch = await _batch(db)
    now = utcnow()
    rows = [
        _pb(f"pb_ended_{i}", ended_batch, "completed", now + timedelta(days=1))
        for i in range(ENDED_PROVIDER_BATCHES)
    ]
    for i in range(DUE_PROVIDER_BATCHES):
        rows.append(_pb(f"pb_created_{i}", due_batch, "created", now - timedelta(seconds=i)))
        rows.append(_pb(f"pb_running_{i}", due_batch, "running", now - timedelta(seconds=i)))
    async with db.write() as conn:
        await conn.execute(insert(provider_batches), rows)
        await conn.exec_driver_sql("ANALYZE")


async def _batch(db: Database) -> str:
    requests = parse_requests(
        requests_for(*(f"q{i}" for i in range(ITEMS_PER_BATCH))),
        openai_endpoint=None,
        max_requests=ITEMS_PER_BATCH,
    )
    new = job_store.NewBatch(org_id="acme", provider="simulator", requests=requests)
    return (await job_store.create_batch(db, new))[0]


def _pb(pb_id: str, job_id: str, status: str, next_action_at: Any) -> dict[str, Any]:
    return {
        "id": pb_id,
        "job_id": job_id,
        "provider": "simulator",
        "status": status,
        "request_count": 1,
        "request_bytes": 100,
        "first_seq": 0,
        "last_seq": 0,
        "next_action_at": next_action_at,
        "created_at": next_action_at,
        "updated_at": next_action_at,
    }


async def explained(db: Database, run: Callable[[], Awaitable[Any]]) -> list[dict[str, Any]]:
    """The executed plan of each statement ``run`` sends (EXPLAIN ANALYZE, same parameters)."""
    with StatementCounter(db.engine) as counter:
        await run()
    plans = []
    async with db.read() as conn:
        for statement, parameters in counter.calls:
            result = await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters)
            document = result.scalar_one()
            plans.append((orjson.loads(document) if isinstance(document, str) else document)[0]["Plan"])
    assert plans, "the store function sent no statement"
    return plans


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def scans_of(plans: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    return [node for plan in plans for node in nodes(plan) if node.get("Relation Name") == table]


def rows_read(scan: dict[str, Any]) -> float:
    """Rows the scan produced plus those it read and threw away, over all its loops."""
    return (
        scan["Actual Rows"]
        + scan.get("Rows Removed by Filter", 0)
        + scan.get("Rows Removed by Index Recheck", 0)
    ) * scan["Actual Loops"]


def assert_indexed(plans: list[dict[str, Any]], table: str, index: str, *, at_most: int) -> None:
    scans = scans_of(plans, table)
    assert scans, f"no scan of {table}"
    assert {scan["Node Type"] for scan in scans} <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, (
        scans
    )
    assert index in {scan.get("Index Name") for scan in scans} | {
        child.get("Index Name") for scan in scans for child in scan.get("Plans", [])
    }, scans
    read = sum(rows_read(scan) for scan in scans)
    assert read <= at_most, f"{table}: {read} rows read for a page of at most {at_most}"


async def test_the_due_queries_read_the_due_provider_batches_only(db: Database) -> None:
    now = utcnow()
    for due in (pbs.due_submissions, pbs.due_polls):
        plans = await explained(db, lambda due=due: due(db, now, 16))
        assert_indexed(
            plans,
            "provider_batches",
            "ix_provider_batches_status_next_action_at",
            at_most=DUE_PROVIDER_BATCHES,
        )
        assert_indexed(plans, "jobs", "pk_jobs", at_most=DUE_PROVIDER_BATCHES)  # one lookup per due row


async def test_an_items_page_reads_that_page_of_that_batch(db: Database) -> None:
    async with db.read() as conn:
        [(batch_id,)] = (await conn.exec_driver_sql("SELECT job_id FROM items WHERE seq = 10 LIMIT 1")).all()
        [(after,)] = (
            await conn.exec_driver_sql("SELECT id FROM items WHERE job_id = $1 AND seq = 1000", (batch_id,))
        ).all()

    async def page(after: str | None) -> None:
        async with db.read() as conn:
            rows, more = await list_item_rows(conn, batch_id, limit=PAGE, after=after, status=None)
        assert len(rows) == PAGE and more

    for cursor in (None, after):
        plans = await explained(db, lambda cursor=cursor: page(cursor))
        assert_indexed(
            plans, "items", "uq_items_job_id_seq", at_most=PAGE + 2
        )  # the page, one more, the cursor


async def test_a_jobs_list_page_reads_that_page_of_that_organization(db: Database) -> None:
    async def page(**filters: str) -> None:
        async with db.read() as conn:
            rows, more = await job_store.list_job_rows(conn, "acme", limit=PAGE, **filters)
        assert len(rows) == PAGE and more

    for filters, index in (
        ({}, "ix_jobs_org_id_id"),
        ({"job_type": "report"}, "ix_jobs_org_id_job_type_id"),
        ({"status": "pending"}, "ix_jobs_org_id_status_id"),
    ):
        plans = await explained(db, lambda filters=filters: page(**filters))
        assert_indexed(plans, "jobs", index, at_most=PAGE + 1)
