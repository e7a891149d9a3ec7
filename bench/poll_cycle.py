"""Poll cycles over many running provider batches: statements per cycle, and a full sweep.

10,000 provider batches are running at a ``longops simulator`` process (its state is written first
with the simulator's own ``SimulatorState``, one request per batch, a processing time of hours, so
none ends), and registered in our database through the store functions the submitter uses: one
batch of 10,000 requests (``create_batch``), planned into 10,000 provider batches of one request
(``plan_submission``), each recorded as submitted with the simulator's batch id (``record_submitted``).

(a) Statements of one poll cycle over ``POLL_BATCH_SIZE`` batches, counted with a SQLAlchemy
    ``before_cursor_execute`` listener, for several batch sizes: the count must not grow with it.
(b) A full sweep: poll cycles (``POLL_BATCH_SIZE`` 100, ``POLL_CONCURRENCY`` 64) until every one of
    the 10,000 has been polled once. Target: under 30 s.

    python bench/poll_cycle.py                         # PostgreSQL, 10,000 batches
    python bench/poll_cycle.py --backend sqlite --batches 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from typing import Any

from sqlalchemy import func, select, update

from longops.domain.requests import BatchRequest
from longops.engine.metrics import Metrics
from longops.engine.poller import Poller
from longops.providers.registry import registry_for
from longops.providers.simulator.state import SimConfig, SimulatorState, derive_item
from longops.server import engine_loop_factory
from longops.settings import Settings
from longops.store import provider_batches as pbs
from longops.store.db import Database, open_database
from longops.store.jobs import NewBatch, create_batch
from longops.store.migrate import upgrade_database
from longops.store.tables import provider_batches
from longops.store.terms import begin_term, term_fence
from longops.store.transitions import start_job
from longops.store.types import utcnow

from _common import StatementCounter, database, peak_rss_mb, print_machine, simulator_process_pid

PARAMS = {"model": "claude-sim", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}
HOURS = 3600.0 * 6


def simulator_state(directory: str, count: int) -> list[str]:
    """``count`` one-request batches stored in ``directory``, in progress for hours; their ids."""
    state = SimulatorState(SimConfig(processing_seconds=HOURS), state_dir=directory)
    return [state.create([derive_item(f"r{i}", PARAMS, 0.0)]).id for i in range(count)]


async def register(db: Database, sim_ids: list[str]) -> str:
    """Our side: one batch of len(sim_ids) requests, one provider batch per request, all running."""
    requests = [BatchRequest(f"r{i}", json.dumps(PARAMS)) for i in range(len(sim_ids))]
    job_id, _ = await create_batch(db, NewBatch(org_id="default", provider="simulator", requests=requests))
    await pbs.plan_submission(db, job_id, utcnow(), provider="simulator", max_requests=1, max_bytes=1 << 30)
    async with db.read() as conn:
        planned = (
            await conn.execute(
                select(provider_batches.c.id, provider_batches.c.first_seq)
                .where(provider_batches.c.job_id == job_id)
                .order_by(provider_batches.c.first_seq)
            )
        ).all()
    now = utcnow()
    for start in range(0, len(planned), 500):
        async with db.write() as conn:
            for pb_id, seq in planned[start : start + 500]:
                await pbs.record_submitted(
                    conn,
                    pb_id,
                    job_id,
                    provider_batch_id=sim_ids[seq],
                    processing_status="in_progress",
                    now=now,
                    next_poll_at=now,
                )
            await start_job(conn, job_id, now)
    return job_id


def settings_for(db_url: str, sim_url: str, batch_size: int) -> Settings:
    return Settings(
        database_url=db_url,
        simulator_url=sim_url,
        poll_batch_size=batch_size,
        poll_concurrency=64,
        # Polled batches are not due again during the run (the sweep polls each exactly once).
        poll_interval_seconds=3600,
        simulator_poll_interval_seconds=3600,
        poll_jitter_seconds=0,
        provider_timeout_seconds=60,
    )


async def make_all_due(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(update(provider_batches).values(next_action_at=utcnow(), last_polled_at=None))


async def measure(db_url: str, sim_url: str, sizes: list[int]) -> dict[str, Any]:
    db = open_database(db_url)
    term = await begin_term(db, "bench", "bench-poll-cycle", utcnow())
    fenced = db.fenced(term_fence(term))
    out: dict[str, Any] = {"statements": {}}
    try:
        for size in sizes:
            settings = settings_for(db_url, sim_url, size)
            registry = registry_for(settings.provider_options(), sim_url)
            try:
                poller = Poller(fenced, registry, settings, Metrics())
                await make_all_due(db)
                await poller.run_once()  # warm up: connections, prepared statements
                with StatementCounter(db.engine) as counter:
                    await poller.run_once()
                out["statements"][size] = counter.statements
            finally:
                await registry.aclose()

        settings = settings_for(db_url, sim_url, 100)
        registry = registry_for(settings.provider_options(), sim_url)
        try:
            poller = Poller(fenced, registry, settings, Metrics())
            await make_all_due(db)
            started, cpu = time.perf_counter(), time.process_time()
            cycles = 0
            deadline = started + 300
            while time.perf_counter() < deadline:
                await poller.run_once()
                cycles += 1
                async with db.read() as conn:
                    unpolled = await conn.scalar(
                        select(func.count())
                        .select_from(provider_batches)
                        .where(provider_batches.c.last_polled_at.is_(None))
                    )
                if not unpolled:
                    break
            out.update(
                sweep_seconds=time.perf_counter() - started,
                cpu_seconds=time.process_time() - cpu,
                cycles=cycles,
                unpolled=unpolled,
            )
            async with db.read() as conn:
                out["errors"] = await conn.scalar(
                    select(func.count())
                    .select_from(provider_batches)
                    .where(provider_batches.c.poll_errors > 0)
                )
        finally:
            await registry.aclose()
    finally:
        await db.dispose()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


async def prepare(db_url: str, sim_ids: list[str]) -> None:
    db = open_database(db_url)
    try:
        await upgrade_database(db)
        await register(db, sim_ids)
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--batches", type=int, default=10_000)
    args = parser.parse_args()
    sizes = [10, 100, 1000]
    print_machine()
    with tempfile.TemporaryDirectory(prefix="longops-sim-") as state, database(args.backend) as db_url:
        started = time.perf_counter()
        sim_ids = simulator_state(state, args.batches)
        asyncio.run(prepare(db_url, sim_ids))
        print(
            f"setup: {args.batches} running provider batches in {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        # On the event loop the engine runs on (uvloop when installed), as `longops engine` does.
        with (
            simulator_process_pid("--processing-seconds", str(HOURS), state_dir=state) as (sim_url, _pid),
            asyncio.Runner(loop_factory=engine_loop_factory()) as runner,
        ):
            result = runner.run(measure(db_url, sim_url, sizes))
    print(f"backend: {args.backend}")
    print("(a) statements of one poll cycle (none ended), by POLL_BATCH_SIZE:")
    for size, statements in result["statements"].items():
        print(f"    {size:>5} batches: {len(statements)} statements")
    first = next(iter(result["statements"].values()))
    for statement in first:
        print(f"        {statement[:110]}")
    counts = {len(s) for s in result["statements"].values()}
    print(f"    constant: {'yes' if len(counts) == 1 else 'NO'}")
    rate = args.batches / result["sweep_seconds"]
    print(
        f"(b) full sweep of {args.batches} at POLL_CONCURRENCY=64, POLL_BATCH_SIZE=100: "
        f"{result['sweep_seconds']:.1f}s ({rate:.0f} polls/s, {result['cycles']} cycles, "
        f"{result['unpolled']} left unpolled, {result['errors']} poll errors), peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    print(
        f"    poller CPU: {result['cpu_seconds']:.1f}s, {1000 * result['cpu_seconds'] / args.batches:.2f} ms per poll "
        "(the simulator, in its own process, shares the two cores)"
    )


if __name__ == "__main__":
    main()
