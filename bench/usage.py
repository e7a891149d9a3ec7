"""``GET /v1/usage`` over the usage of 1,000,000 items, grouped by model and day: time and query plan.

The answer is read from ``usage_daily`` (sums per organization, UTC day, provider and model, added
to when results are written), never from ``items``; so what this read costs depends on the summary
rows, not on the items. The benchmark writes the summary rows that 1,000,000 ingested items leave
behind (through ``store.usage.add_usage``, the function ingestion calls): 20 organizations × 90 days
× 2 providers × 12 models, 43,200 rows, 1,000,000 results in all. Then it times the caller's
organization's report over the 90 days, grouped by model and day (1,080 rows), through the real
API (loopback HTTP, open mode), and prints the database's plan for the statement.

    python bench/usage.py                     # SQLite and PostgreSQL
    python bench/usage.py --backend postgres --rounds 50
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, date, datetime, timedelta

import httpx
from sqlalchemy import insert, text

from longops.api.auth import DEFAULT_ORG
from longops.domain.usage import Usage
from longops.settings import Settings
from longops.store.db import open_database
from longops.store.migrate import upgrade_database
from longops.store.tables import jobs
from longops.store.types import utcnow
from longops.store.usage import UsageSum, add_usage, daily_usage_query

from _common import app_in_loop, database, print_machine

ORGS, DAYS, PROVIDERS, MODELS, ITEMS = 20, 90, ("simulator", "anthropic"), 12, 1_000_000
FIRST_DAY = date(2026, 9, 1)


async def fill(url: str) -> None:
    """One job per organization and provider, and for every day one ``add_usage`` of what that
    day's results of each (job, model) added up to."""
    db = open_database(url)
    await upgrade_database(db)
    now = utcnow()
    job_ids = {(org, p): f"job_{org:02d}{p}" for org in range(ORGS) for p in PROVIDERS}
    per_row = ITEMS // (ORGS * DAYS * len(PROVIDERS) * MODELS)
    extra = ITEMS - per_row * ORGS * DAYS * len(PROVIDERS) * MODELS
    async with db.write() as conn:
        await conn.execute(
            insert(jobs),
            [
                {
                    "id": job_id,
                    "org_id": DEFAULT_ORG if org == 0 else f"org{org}",
                    "job_type": "llm_batch",
                    "status": "running",
                    "provider": provider,
                    "metadata": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for (org, provider), job_id in job_ids.items()
            ],
        )
    for day in range(DAYS):
        moment = datetime.combine(FIRST_DAY + timedelta(days=day), datetime.min.time(), UTC)
        sums = {}
        for job_id in job_ids.values():
            for model in range(MODELS):
                requests = per_row + (1 if extra > 0 else 0)
                extra -= 1
                usage = Usage(300 * requests, 200 * requests, 1000 * requests, 50 * requests, 20 * requests)
                sums[job_id, f"claude-model-{model:02d}"] = UsageSum(requests, usage)
        async with db.write() as conn:
            await add_usage(conn, sums, moment)
    async with db.read() as conn:
        total = (await conn.execute(text("SELECT sum(requests), count(*) FROM usage_daily"))).one()
        query = daily_usage_query(DEFAULT_ORG, first_day=FIRST_DAY, last_day=None, by_day=True)
        compiled = query.compile(conn.sync_connection, compile_kwargs={"literal_binds": True})
        explain = "EXPLAIN ANALYZE" if db.is_postgres else "EXPLAIN QUERY PLAN"
        plan = (await conn.execute(text(f"{explain} {compiled}"))).all()
    await db.dispose()
    print(f"  usage_daily: {total[1]} rows, {int(total[0])} results")
    print("  plan:")
    for row in plan:
        print("    " + " | ".join(str(v) for v in row if v is not None))


async def measure(url: str, rounds: int) -> None:
    settings = Settings(database_url=url, access_log=False, log_level="WARNING")
    async with (
        app_in_loop(settings, run_engine=False) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as client,
    ):
        params = {"group_by": "model,day", "start": FIRST_DAY.isoformat()}
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            answer = await client.get("/v1/usage", params=params)
            times.append((time.perf_counter() - started) * 1000)
            answer.raise_for_status()
        rows = answer.json()["data"]
    requests = sum(row["requests"] for row in rows)
    print(
        f"  GET /v1/usage?group_by=model,day: {len(rows)} rows ({requests} results of this organization); "
        f"first {times[0]:.1f} ms, median {statistics.median(times):.1f} ms, "
        f"max {max(times):.1f} ms over {rounds} calls"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print_machine()
    for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
        print(f"{backend}:", flush=True)
        with database(backend) as url:
            asyncio.run(fill(url))
            asyncio.run(measure(url, args.rounds))


if __name__ == "__main__":
    main()
