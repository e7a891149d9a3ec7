"""Growth: list, get and items pages with 1,000,000 terminal items in the database, against 1,000.

Each database holds finished batches written directly with SQL (``generate_series`` on PostgreSQL,
a recursive CTE on SQLite), shaped as the store writes them: one big batch (99% of the items, 1% of
them errored) and 1,000 (large) or 10 (small) batches of 10 items. The real app then serves, in
this process, ``GET /v1/batches`` (list), ``GET /v1/batches/{big}`` (get), ``GET
/v1/batches/{big}/items?after=…`` (a page 90% deep into the big batch) and the same page filtered
with ``status=errored``; each is timed over ``--requests`` sequential requests. The SQL each one
runs is captured and explained: ``EXPLAIN (ANALYZE)`` on PostgreSQL, ``EXPLAIN QUERY PLAN`` on SQLite.

    python bench/growth.py                       # both backends, 1,000,000 and 1,000 items
    python bench/growth.py --backend sqlite --items 200000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import bindparam, insert, select, text

from longops.settings import Settings
from longops.store.db import Database, open_database
from longops.store.migrate import upgrade_database
from longops.store.tables import items, jobs, provider_batches

from _common import StatementCounter, app_in_loop, database, print_machine

STAMP = datetime(2026, 11, 1, tzinfo=UTC)
SMALL_BATCH = 10
ERROR = '{"type":"overloaded_error","message":"Overloaded"}'
PARAMS = '{"model":"claude-sim","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}'


@dataclass
class Shape:
    big: int  # items in the big batch
    small: int  # batches of SMALL_BATCH items


def shape_for(total: int) -> Shape:
    small = 1000 if total >= 100_000 else 30  # both list pages are full (20 batches)
    return Shape(big=total - small * SMALL_BATCH, small=small)


async def populate(db: Database, shape: Shape) -> str:
    """Write the batches; returns the big batch's id (created first, so it is the oldest)."""
    return await populate_sizes(db, [shape.big] + [SMALL_BATCH] * shape.small)


async def populate_sizes(db: Database, sizes: list[int]) -> str:
    """Write finished batches of these sizes, in this order; returns the first one's id (the oldest)."""
    job_rows, pb_rows = [], []
    for index, size in enumerate(sizes):
        job_id, errored = f"job_{index:026d}", size // 100
        job_rows.append(
            {
                "id": job_id,
                "org_id": "default",
                "job_type": "llm_batch",
                "status": "completed",
                "provider": "simulator",
                "metadata": {},
                "n_total": size,
                "n_succeeded": size - errored,
                "n_errored": errored,
                "stop_reason": "completed",
                "created_at": STAMP,
                "updated_at": STAMP,
                "started_at": STAMP,
                "completed_at": STAMP,
            }
        )
        pb_rows.append(
            {
                "id": f"pb_{index:026d}",
                "job_id": job_id,
                "provider": "simulator",
                "provider_batch_id": f"msgbatch_{index:020d}",
                "status": "completed",
                "processing_status": "ended",
                "request_count": size,
                "request_bytes": size * len(PARAMS),
                "first_seq": 0,
                "last_seq": size - 1,
                "next_action_at": STAMP,
                "last_polled_at": STAMP,
                "ended_at": STAMP,
                "created_at": STAMP,
                "updated_at": STAMP,
            }
        )
    async with db.write() as conn:
        await conn.execute(insert(jobs), job_rows)
        await conn.execute(insert(provider_batches), pb_rows)
        postgres = conn.dialect.name == "postgresql"
        for index, size in enumerate(sizes):
            await conn.execute(
                _items_sql(postgres),
                {
                    "job": f"{index:026d}",
                    "short": f"{index:06d}",
                    "n": size,
                    "stamp": STAMP,
                    "params": PARAMS,
                    "error": ERROR,
                },
            )
        await conn.execute(text("ANALYZE"))
    return job_rows[0]["id"]


def _items_sql(postgres: bool) -> Any:
    """Items 0..n-1 of the job numbered :job (26 digits): every hundredth errored, the others succeeded."""
    pad = ":job"
    if postgres:
        series = "generate_series(0, CAST(:n AS integer) - 1) AS s(x)"
        seq_text, cte = "lpad(CAST(x AS text), 10, '0')", ""
    else:
        series = "s"
        seq_text = "printf('%010d', x)"
        cte = "WITH RECURSIVE s(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM s WHERE x < :n - 1) "
    error = "CAST(:error AS json)" if postgres else ":error"
    response = (
        '\'{"id":"msg_\' || ' + seq_text + ' || \'","type":"message","role":"assistant",'
        '"content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn"}\''
    )
    return text(
        f"""{cte}INSERT INTO items (id, job_id, seq, custom_id, params, params_bytes, status,
            provider_batch_id, response, error, attempts, created_at, updated_at)
        SELECT 'item_' || :short || {seq_text}, 'job_' || {pad}, x, 'req-' || x, :params, {len(PARAMS)},
            CASE WHEN x % 100 = 99 THEN 'errored' ELSE 'succeeded' END, 'pb_' || {pad},
            CASE WHEN x % 100 = 99 THEN NULL ELSE {response} END,
            CASE WHEN x % 100 = 99 THEN {error} ELSE NULL END,
            1, :stamp, :stamp
        FROM {series}"""
    ).bindparams(bindparam("stamp", type_=items.c.created_at.type))


async def measure(db_url: str, total: int, requests: int) -> dict[str, Any]:
    db = open_database(db_url)
    await upgrade_database(db)
    started = time.perf_counter()
    big = await populate(db, shape_for(total))
    fill_seconds = time.perf_counter() - started
    async with db.read() as conn:
        size = await conn.scalar(select(jobs.c.n_total).where(jobs.c.id == big))
        deep = await conn.scalar(
            select(items.c.id).where(items.c.job_id == big, items.c.seq == int(size * 0.9))
        )
    paths = {
        "list": "/v1/batches?limit=20",
        "get": f"/v1/batches/{big}",
        "items page (deep)": f"/v1/batches/{big}/items?limit=100&after={deep}",
        "items page, status=errored (deep)": f"/v1/batches/{big}/items?limit=20&status=errored&after={deep}",
    }
    settings = Settings(database_url=db_url, log_level="WARNING")
    out: dict[str, Any] = {"fill_seconds": fill_seconds, "latency_ms": {}, "plans": {}}
    async with app_in_loop(settings, run_engine=False) as app, httpx.AsyncClient(base_url=app.url) as client:
        for name, path in paths.items():
            timings = []
            for _ in range(requests):
                t0 = time.perf_counter()
                response = await client.get(path)
                timings.append(time.perf_counter() - t0)
                assert response.status_code == 200, response.text
            out["latency_ms"][name] = 1000 * statistics.median(timings)
            with StatementCounter(app.app.state.longops.db.engine) as counter:
                assert (await client.get(path)).status_code == 200
            out["plans"][name] = await explain(db, counter.calls)
    await db.dispose()
    return out


async def explain(db: Database, calls: list[tuple[str, Any]]) -> list[str]:
    """The plan of every SELECT the request ran (the API key check included), as the database gives it."""
    plans = []
    async with db.read() as conn:
        postgres = conn.dialect.name == "postgresql"
        for statement, parameters in calls:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            prefix = (
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " if postgres else "EXPLAIN QUERY PLAN "
            )
            rows = (await conn.exec_driver_sql(prefix + statement, tuple(parameters or ()))).all()
            lines = [str(row[0]) for row in rows] if postgres else [str(row[-1]) for row in rows]
            plans.append(" ".join(statement.split())[:140] + "\n      " + "\n      ".join(lines))
    return plans


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--plans", action="store_true", help="print the plans of the small database too")
    args = parser.parse_args()
    print_machine()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        results = {}
        for total in (1_000, args.items):
            with database(backend) as db_url:
                results[total] = asyncio.run(measure(db_url, total, args.requests))
        print(f"\n== {backend}: median latency in ms over {args.requests} requests")
        print(f"{'request':<36} {'1,000 items':>12} {f'{args.items:,} items':>16}")
        for name in results[1_000]["latency_ms"]:
            small, large = results[1_000]["latency_ms"][name], results[args.items]["latency_ms"][name]
            print(f"{name:<36} {small:>12.2f} {large:>16.2f}")
        print(f"(filled {args.items:,} items in {results[args.items]['fill_seconds']:.1f}s)")
        for total in (args.items, 1_000) if args.plans else (args.items,):
            print(f"\n-- {backend} plans with {total:,} items")
            for name, plans in results[total]["plans"].items():
                print(f"  [{name}]")
                for plan in plans:
                    print(f"    {plan}")


if __name__ == "__main__":
    main()
