"""Dashboard pages with 1,000,000 items in the database: server time per page, p50 and p95.

The database holds ten finished batches of 100,000 items (1% errored) and 100 of 10 items, written
directly with SQL as ``bench/growth.py`` writes them. The real app then serves, in this process and
in open mode, each page over ``--requests`` sequential requests on loopback: the overview, the
batches list, the page of one 100,000-item batch (its counts, provider batches, first 50 items and
webhook deliveries), the same page as htmx's refresh asks for it (the live part only), and a page
of items 90% deep into that batch, filtered to ``errored``. The time is the client's, from sending
the request to the last byte, so it includes the loopback HTTP round trip; on a busy machine it is
mostly waiting for a core. The CPU column is this process's CPU time per request (server, database
driver threads and the client together), which depends much less on what else the machine runs.

    python bench/ui.py                          # both backends
    python bench/ui.py --backend sqlite --requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx
from sqlalchemy import select

from longops.settings import Settings
from longops.store.db import open_database
from longops.store.migrate import upgrade_database
from longops.store.tables import items

from _common import app_in_loop, database, print_machine
from growth import populate_sizes

BIG = 100_000
SIZES = [BIG] * 10 + [10] * 100  # 1,001,000 items


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


async def measure(db_url: str, requests: int) -> tuple[float, dict[str, tuple[list[float], float]]]:
    db = open_database(db_url)
    await upgrade_database(db)
    started = time.perf_counter()
    big = await populate_sizes(db, SIZES)
    fill_seconds = time.perf_counter() - started
    async with db.read() as conn:
        deep = await conn.scalar(
            select(items.c.id).where(items.c.job_id == big, items.c.seq == int(BIG * 0.9))
        )
    await db.dispose()
    pages: dict[str, tuple[str, dict[str, str]]] = {
        "overview": ("/ui/", {}),
        "batches list": ("/ui/batches", {}),
        "batch page (100,000 items)": (f"/ui/batches/{big}", {}),
        "batch page, htmx refresh": (f"/ui/batches/{big}", {"HX-Request": "true"}),
        "items page, errored, 90% deep": (f"/ui/batches/{big}?item_status=errored&after={deep}", {}),
    }
    settings = Settings(database_url=db_url, log_level="WARNING", access_log=False)
    timings: dict[str, tuple[list[float], float]] = {}
    async with app_in_loop(settings, run_engine=False) as app, httpx.AsyncClient(base_url=app.url) as client:
        for name, (path, headers) in pages.items():
            response = await client.get(path, headers=headers)  # warm-up; also checks the page
            assert response.status_code == 200, (path, response.status_code, response.text[:300])
            samples = []
            cpu_started = time.process_time()
            for _ in range(requests):
                t0 = time.perf_counter()
                response = await client.get(path, headers=headers)
                samples.append(1000 * (time.perf_counter() - t0))
                assert response.status_code == 200
            timings[name] = (samples, 1000 * (time.process_time() - cpu_started) / requests)
    return fill_seconds, timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    print_machine()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        with database(backend) as db_url:
            fill_seconds, timings = asyncio.run(measure(db_url, args.requests))
        print(
            f"\n== {backend}: {sum(SIZES):,} items (filled in {fill_seconds:.1f}s), {args.requests} requests each"
        )
        print(f"{'page':<34} {'p50 ms':>8} {'p95 ms':>8} {'CPU ms':>8}")
        for name, (samples, cpu_ms) in timings.items():
            print(f"{name:<34} {statistics.median(samples):>8.1f} {p95(samples):>8.1f} {cpu_ms:>8.1f}")


if __name__ == "__main__":
    main()
