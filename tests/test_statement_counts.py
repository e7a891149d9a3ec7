"""Regression guard: the poller's database statements do not grow with the work (issue 7).

Not a timed test: it counts statements (SQLAlchemy ``before_cursor_execute``), so an accidental
per-row or per-batch query fails here on both backends instead of showing up as a slow benchmark.

* One poll cycle over N running provider batches (none ended) costs the same statements for N = 3
  and N = 30: the due query, the leader's fence and one executemany.
* An ingest chunk costs the same statements whether it holds 10 results or 100 (usage accounting
  included), and so does the transaction that writes the last chunk and completes the provider batch.
* Small batches that end in the same cycle are completed together: one transaction of the same
  statements for 2 batches as for 12.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from longops.engine.metrics import Metrics
from longops.engine.poller import Poller
from longops.settings import Settings
from longops.store.terms import begin_term, term_fence
from longops.store.types import utcnow
from tests.support.harness import Harness, harness, requests_for
from tests.support.statements import StatementCounter, TransactionLog

MakeSettings = Callable[..., Settings]


async def fenced_poller(h: Harness) -> Poller:
    """A poller writing through a term-fenced view, as the engine's leader runs it."""
    term = await begin_term(h.db, "statement-counts", "test", utcnow())
    return Poller(h.db.fenced(term_fence(term)), h.registry, h.settings, Metrics())


async def submit_all(h: Harness, batches: int) -> None:
    for _ in range(batches):
        await h.submitter.run_once()
    stats = await h.sim_stats()
    assert stats["batches"] == batches


async def create(h: Harness, count: int, per_batch: int) -> list[dict[str, Any]]:
    return [await h.create_batch(requests_for(*(f"q{i}" for i in range(per_batch)))) for _ in range(count)]


async def test_one_poll_cycle_costs_the_same_statements_for_3_and_30_running_batches(
    make_settings: MakeSettings,
) -> None:
    async with harness(make_settings(), processing_seconds=3600.0) as h:
        poller = await fenced_poller(h)
        counted: dict[int, list[str]] = {}
        created = 0
        for total in (3, 30):
            await create(h, total - created, 1)
            created = total
            await submit_all(h, total)
            await asyncio.sleep(h.poller_interval)
            await poller.run_once()  # warm-up: connections, prepared statements
            await asyncio.sleep(h.poller_interval)
            retrieves = (await h.sim_stats())["calls"]["retrieve"]
            with StatementCounter(h.db.engine) as counter:
                await poller.run_once()
            assert (await h.sim_stats())["calls"]["retrieve"] - retrieves == total  # every one polled
            counted[total] = [s for s in counter.statements if not s.startswith("BEGIN")]  # SQLite's own
        assert len(counted[3]) == len(counted[30]), (counted[3], counted[30])
        assert len(counted[30]) == 3, counted[30]  # the due query, the fence, one executemany


async def ingest_cycle(settings: Settings, batches: int, per_batch: int) -> list[list[str]]:
    """The transactions writing items in the poll cycle in which ``batches`` batches of ``per_batch``
    results end (the database may hold batches of an earlier call: they are ended already)."""
    async with harness(settings, processing_seconds=0.0) as h:
        poller = await fenced_poller(h)
        await create(h, batches, per_batch)
        await submit_all(h, batches)
        await asyncio.sleep(h.poller_interval)
        with TransactionLog(h.db.engine) as log:
            await poller.run_once()
        listed = (await h.api.get("/v1/batches", params={"limit": batches})).json()["data"]
        assert len(listed) == batches
        assert {b["status"] for b in listed} == {"completed"}, listed
        assert {b["request_counts"]["succeeded"] for b in listed} == {per_batch}
    return [tx for tx in log.transactions if any("UPDATE items SET status" in s for s in tx)]


async def test_an_ingest_chunk_costs_the_same_statements_for_10_and_100_results(
    make_settings: MakeSettings,
) -> None:
    small = await ingest_cycle(make_settings(ingest_chunk_size=10), 1, 40)
    large = await ingest_cycle(make_settings(ingest_chunk_size=100), 1, 400)
    # Three intermediate chunks, then the last chunk together with the completion.
    assert len(small) == len(large) == 4, (small, large)
    for tx_small, tx_large in zip(small, large, strict=True):
        assert len(tx_small) == len(tx_large), (tx_small, tx_large)
    chunk = small[0]
    # fence, commit mode (PG) or open-items query (SQLite), items, counters, then the usage sums:
    # one statement on PostgreSQL, one per table on SQLite (no data-modifying CTEs there)
    usage_statements = 2 if make_settings().database_url.startswith("sqlite") else 1
    assert len(chunk) == 4 + usage_statements, chunk


async def test_small_batches_ending_in_one_cycle_are_completed_in_one_transaction(
    make_settings: MakeSettings,
) -> None:
    two = await ingest_cycle(make_settings(), 2, 3)
    twelve = await ingest_cycle(make_settings(), 12, 3)
    assert len(two) == len(twelve) == 1, (two, twelve)
    assert len(two[0]) == len(twelve[0]), (two[0], twelve[0])
