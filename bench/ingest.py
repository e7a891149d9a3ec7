"""Result ingestion through the real poller against the simulator: items/s and peak RSS.

Workloads (results of about 1 KB each): one batch of 100,000 items, and 1,000 batches of 100
items, on SQLite and on PostgreSQL, through the Anthropic path (``simulator``) and the OpenAI path
(``simulator_openai``: upload, create, output and error files), both in the same run. Batches are
created first; then a fresh process runs only the submitter until every batch is submitted (its
peak RSS is the submission's own: ``submit RSS MB``), and another only the poller until every
batch has ended (``peak RSS MB``: the ingestion's). Both run on the event loop `longops engine`
runs on (uvloop when installed). The poller writes through a database view fenced by a
leadership term, as the engine's leader does.

    python bench/ingest.py                      # everything
    python bench/ingest.py --backend sqlite --shape big --items 20000
    python bench/ingest.py --backend postgres --provider simulator_openai --items 50000
    python bench/ingest.py --backend postgres --shape big --profile /tmp/prof   # py-spy both processes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from longops.domain.requests import BatchRequest
from longops.engine.metrics import Metrics
from longops.engine.poller import Poller
from longops.engine.submitter import Submitter
from longops.providers.registry import SIMULATOR, SIMULATOR_OPENAI, registry_for
from longops.server import engine_loop_factory
from longops.settings import Settings
from longops.store.db import open_database
from longops.store.jobs import NewBatch, create_batch
from longops.store.migrate import upgrade_database
from longops.store.tables import jobs
from longops.store.terms import begin_term, term_fence
from longops.store.types import utcnow

from _common import (
    database,
    peak_rss_mb,
    print_machine,
    profile_command,
    profiling_pid,
    simulator_process_pid,
    summarize_profile,
)

PROMPT = "Summarize the following text in one paragraph. " + "lorem ipsum dolor sit amet " * 33


def bench_settings(db_url: str, simulator_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        simulator_url=simulator_url,
        poll_interval_seconds=0.05,
        poll_jitter_seconds=0.0,
        submit_interval_seconds=0.05,
        provider_timeout_seconds=600,
    )


def requests(count: int, provider: str) -> list[BatchRequest]:
    """About 1 KB of prompt each, echoed back by the simulator: results of about 1 KB."""
    extra = {"max_tokens": 512} if provider == SIMULATOR else {}
    return [
        BatchRequest(
            f"req-{i}",
            json.dumps({"model": "sim", **extra, "messages": [{"role": "user", "content": f"{i} {PROMPT}"}]}),
        )
        for i in range(count)
    ]


async def prepare(settings: Settings, batches: int, per_batch: int, provider: str) -> None:
    db = open_database(settings.database_url)
    await upgrade_database(db)
    endpoint = "/v1/messages" if provider == SIMULATOR else "/v1/chat/completions"
    try:
        for _ in range(batches):
            new = NewBatch(
                org_id="default", provider=provider, requests=requests(per_batch, provider), endpoint=endpoint
            )
            await create_batch(db, new)
    finally:
        await db.dispose()


async def submit(settings: Settings) -> dict[str, Any]:
    """Run submitter cycles until no batch is left to submit; return seconds and peak memory."""
    db = open_database(settings.database_url)
    registry = registry_for(settings.provider_options(), settings.simulator_url)
    submitter = Submitter(db, registry, settings, Metrics())
    started = time.perf_counter()
    try:
        while True:
            await submitter.run_once()
            async with db.read() as conn:
                unsubmitted = await conn.scalar(
                    select(func.count()).select_from(jobs).where(jobs.c.status == "created")
                )
            if not unsubmitted:
                break
    finally:
        await registry.aclose()
        await db.dispose()
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}


async def ingest(settings: Settings) -> dict[str, Any]:
    """Run poll cycles until every batch has ended; return items, seconds and peak memory."""
    db = open_database(settings.database_url)
    registry = registry_for(settings.provider_options(), settings.simulator_url)
    metrics = Metrics()
    # As the engine's leader does: every write transaction first checks the leadership term.
    term = await begin_term(db, "bench", "bench-ingest", utcnow())
    poller = Poller(db.fenced(term_fence(term)), registry, settings, metrics)
    started, cpu = time.perf_counter(), time.process_time()
    try:
        while True:
            delay = await poller.run_once()
            async with db.read() as conn:
                running = await conn.scalar(
                    select(func.count()).select_from(jobs).where(jobs.c.status == "running")
                )
            if not running:
                break
            await asyncio.sleep(delay if delay > 0.05 else 0)
        elapsed, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        async with db.read() as conn:
            items = await conn.scalar(select(func.sum(jobs.c.n_succeeded)))
    finally:
        await registry.aclose()
        await db.dispose()
    return {
        "items": int(items or 0),
        "seconds": elapsed,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def _last_json(stdout: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        next(line for line in reversed(stdout.splitlines()) if line.startswith("{"))
    )
    return result


def run_case(
    backend: str, batches: int, per_batch: int, provider: str, profile: Path | None = None
) -> dict[str, Any]:
    with database(backend) as db_url, simulator_process_pid("--processing-seconds", "0") as (sim, sim_pid):
        settings = bench_settings(db_url, sim)
        asyncio.run(prepare(settings, batches, per_batch, provider))
        submitter = [sys.executable, __file__, "--child", "submit", db_url, sim]
        submitted = _last_json(subprocess.run(submitter, capture_output=True, text=True, check=True).stdout)
        command = [sys.executable, __file__, "--child", "ingest", db_url, sim]
        with contextlib.ExitStack() as stack:
            if profile is not None:
                name = f"{backend}-{batches}x{per_batch}"
                command = profile_command(profile / f"poller-{name}.txt", *command)
                stack.enter_context(profiling_pid(sim_pid, profile / f"simulator-{name}.txt"))
            child = subprocess.run(command, capture_output=True, text=True, check=True)
        result = _last_json(child.stdout)
    result.update(backend=backend, batches=batches, per_batch=per_batch, submit=submitted)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--shape", choices=["big", "small", "both"], default="both")
    parser.add_argument("--items", type=int, default=100_000, help="items in the big batch")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="record both processes with py-spy; summaries printed"
    )
    parser.add_argument(
        "--provider", choices=[SIMULATOR, SIMULATOR_OPENAI, "both"], default="both", help="the path measured"
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("ROLE", "DATABASE_URL", "SIMULATOR_URL"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.child:
        # On the event loop the engine runs on (uvloop when installed), as `longops engine` does.
        role, db_url, sim = args.child
        work = submit if role == "submit" else ingest
        with asyncio.Runner(loop_factory=engine_loop_factory()) as runner:
            print(json.dumps(runner.run(work(bench_settings(db_url, sim)))))
        return
    shapes = {"big": [(1, args.items)], "small": [(1000, 100)], "both": [(1, args.items), (1000, 100)]}[
        args.shape
    ]
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    providers = [SIMULATOR, SIMULATOR_OPENAI] if args.provider == "both" else [args.provider]
    print_machine()
    print(
        f"{'backend':<10} {'provider':<17} {'workload':<18} {'items':>8} {'seconds':>8} {'items/s':>9}"
        f" {'peak RSS MB':>12} {'ms/batch':>9} {'overhead ms/batch':>18} {'poller CPU s':>13}"
        f" {'submit s':>9} {'submit RSS MB':>14}"
    )
    for backend, provider in ((b, p) for b in backends for p in providers):
        per_item: float | None = None  # seconds per item of the big batch, to isolate per-batch costs
        for batches, per_batch in shapes:
            r = run_case(backend, batches, per_batch, provider, args.profile)
            workload = f"{batches} x {per_batch}"
            rate = r["items"] / r["seconds"]
            per_batch_ms = 1000 * r["seconds"] / batches
            if batches == 1:
                per_item = r["seconds"] / max(r["items"], 1)
            # What a small batch costs beyond its items (at the big batch's cost per item).
            overhead = (
                ""
                if per_item is None or batches == 1
                else f"{per_batch_ms - 1000 * per_item * per_batch:.2f}"
            )
            print(
                f"{backend:<10} {provider:<17} {workload:<18} {r['items']:>8} {r['seconds']:>8.2f} {rate:>9.0f}"
                f" {r['peak_rss_mb']:>12.1f} {per_batch_ms:>9.2f} {overhead:>18} {r['cpu_seconds']:>13.1f}"
                f" {r['submit']['seconds']:>9.2f} {r['submit']['peak_rss_mb']:>14.1f}",
                flush=True,
            )
            if args.profile is not None:
                for role in ("poller", "simulator"):
                    print(summarize_profile(args.profile / f"{role}-{backend}-{batches}x{per_batch}.txt"))


if __name__ == "__main__":
    main()
