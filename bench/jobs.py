"""Generic jobs end to end: 20,000 no-op jobs enqueued in bulk, run by two worker processes on PostgreSQL.

The same workload on longops and on three PostgreSQL job queues for Python: PgQueuer, Procrastinate
and Oban (`oban` on PyPI). Each system gets its own fresh database on one PostgreSQL server (the one
named by LONGOPS_TEST_POSTGRES_URL, else an embedded one), its schema, and two worker processes
with the same concurrency each (`--concurrency`); once both are up, one process enqueues all jobs
with the system's own bulk API. Measured: from the moment the enqueue call starts to the last
job's completion as the database recorded it (jobs/s = jobs / that time), the enqueue call alone,
and the peak RSS (`VmHWM`) of each worker process.

    longops        `create_jobs_bulk` (one multi-row INSERT per 5,000 jobs, one transaction);
                   two `longops engine` processes, LONGOPS_WORKER_CONCURRENCY = concurrency,
                   LONGOPS_HANDLERS=noop_handlers (bench/noop_handlers.py)
    pgqueuer       `Queries.enqueue` with lists (one statement); `PgQueuer.run` with
                   max_concurrent_tasks = concurrency, batch_size = concurrency / 2
    procrastinate  `Task.batch_defer_async`; `App.run_worker_async(concurrency=…)`
    oban           `Oban.enqueue_many`; `Oban(queues={"default": concurrency})`

The three others are bench-only dependencies (the `bench` extra: `pip install -e '.[bench]'`). Oban
needs Python >= 3.12: its processes run under `--oban-python` (default: $LONGOPS_BENCH_OBAN_PYTHON,
else this interpreter if it can import oban); a system that cannot run here is reported as such,
and the others still run.

    python bench/jobs.py                                  # all four, 20,000 jobs, concurrency 100
    python bench/jobs.py --systems longops --concurrency 10 --concurrency 100
    python bench/jobs.py --oban-python /path/to/py3.12/venv/bin/python
    python bench/jobs.py --systems longops --profile /tmp/prof      # py-spy both engines
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SYSTEMS = ("longops", "pgqueuer", "procrastinate", "oban")
NOOP = "bench_noop"
TARGET_LONGOPS = 3000

# Per system: (jobs done, jobs failed, last completion as epoch seconds) in its own tables.
DONE_SQL = {
    "longops": (
        f"SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status IN "
        f"('failed', 'cancelled')), extract(epoch FROM max(completed_at)) FROM jobs WHERE job_type = '{NOOP}'"
    ),
    "pgqueuer": (
        "SELECT count(*) FILTER (WHERE status = 'successful'), count(*) FILTER (WHERE status IN "
        "('exception', 'failed', 'canceled')), extract(epoch FROM max(created)) FROM pgqueuer_log"
    ),
    "procrastinate": (
        "SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'), "
        "(SELECT count(*) FROM procrastinate_jobs WHERE status IN ('failed', 'aborted', 'cancelled')), "
        "(SELECT extract(epoch FROM max(at)) FROM procrastinate_events WHERE type = 'succeeded')"
    ),
    "oban": (
        "SELECT count(*) FILTER (WHERE state = 'completed'), count(*) FILTER (WHERE state IN "
        "('discarded', 'cancelled')), extract(epoch FROM max(completed_at)) FROM oban_jobs"
    ),
}


# --- the systems' own code, run in child processes (only the system's library is imported) -----------


def _ready() -> None:
    print("ready", flush=True)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def pgqueuer_setup(dsn: str) -> None:
    import asyncpg
    from pgqueuer import Queries
    from pgqueuer.db import AsyncpgDriver

    conn = await asyncpg.connect(dsn)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


async def pgqueuer_enqueue(dsn: str, count: int) -> tuple[float, float]:
    import asyncpg
    from pgqueuer import Queries
    from pgqueuer.db import AsyncpgDriver

    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        started = time.time()
        await queries.enqueue([NOOP] * count, [None] * count, [0] * count)
        return started, time.time()
    finally:
        await conn.close()


async def pgqueuer_worker(dsn: str, concurrency: int) -> None:
    from datetime import timedelta

    import asyncpg
    from pgqueuer import PgQueuer

    conn = await asyncpg.connect(dsn)
    pgq = PgQueuer.from_asyncpg_connection(conn)

    @pgq.entrypoint(NOOP)
    async def noop(job: Any) -> None:
        return None

    stop = _stop_event()
    run = asyncio.create_task(
        pgq.run(
            batch_size=max(1, concurrency // 2),
            max_concurrent_tasks=concurrency,
            log_aggregation_interval=timedelta(0),  # keep pgqueuer_log whole: it is what is counted
        )
    )
    _ready()
    await asyncio.wait([run, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    pgq.shutdown.set()
    await run


def _procrastinate_app(dsn: str) -> Any:
    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=dsn))

    @app.task(name=NOOP)
    async def noop() -> None:
        return None

    return app


async def procrastinate_setup(dsn: str) -> None:
    app = _procrastinate_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def procrastinate_enqueue(dsn: str, count: int) -> tuple[float, float]:
    app = _procrastinate_app(dsn)
    async with app.open_async():
        task = app.tasks[NOOP]
        started = time.time()
        await task.batch_defer_async(*({} for _ in range(count)))
        return started, time.time()


async def procrastinate_worker(dsn: str, concurrency: int) -> None:
    app = _procrastinate_app(dsn)
    async with app.open_async():
        stop = _stop_event()
        run = asyncio.create_task(
            app.run_worker_async(concurrency=concurrency, install_signal_handlers=False)
        )
        _ready()
        await asyncio.wait([run, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


def _oban_worker_class() -> Any:
    from oban import worker

    @worker(queue="default")
    class BenchNoop:
        async def process(self, job: Any) -> None:
            return None

    return BenchNoop


async def oban_setup(dsn: str) -> None:
    from oban import Oban
    from oban.schema import install

    pool = await Oban.create_pool(dsn)
    try:
        await install(pool)
    finally:
        await pool.close()


async def oban_enqueue(dsn: str, count: int) -> tuple[float, float]:
    from oban import Oban

    noop = _oban_worker_class()
    pool = await Oban.create_pool(dsn)
    try:
        oban = Oban(pool=pool)
        started = time.time()
        await oban.enqueue_many([noop.new({}) for _ in range(count)])
        return started, time.time()
    finally:
        await pool.close()


async def oban_worker(dsn: str, concurrency: int) -> None:
    from oban import Oban

    _oban_worker_class()
    pool = await Oban.create_pool(dsn)
    try:
        async with Oban(pool=pool, queues={"default": concurrency}):
            stop = _stop_event()
            _ready()
            await stop.wait()
    finally:
        await pool.close()


async def longops_setup(dsn: str) -> None:
    from longops.store.db import open_database
    from longops.store.migrate import upgrade_database

    db = open_database(dsn)
    try:
        await upgrade_database(db)
    finally:
        await db.dispose()


async def longops_enqueue(dsn: str, count: int) -> tuple[float, float]:
    from longops.store.db import open_database
    from longops.store.job_queue import NewJob, create_jobs_bulk

    db = open_database(dsn)
    try:
        new = [
            NewJob(org_id="default", job_type=NOOP, input=None, max_attempts=1, timeout_seconds=3600.0)
            for _ in range(count)
        ]
        started = time.time()
        await create_jobs_bulk(db, new)
        return started, time.time()
    finally:
        await db.dispose()


def child(role: str, system: str, dsn: str, number: int) -> None:
    """``--setup`` / ``--enqueue`` / ``--worker``: one system's step, in this (child) process."""
    step = globals()[f"{system}_{role}"]
    if role == "setup":
        asyncio.run(step(dsn))
    elif role == "enqueue":
        started, ended = asyncio.run(step(dsn, number))
        print(json.dumps({"started": started, "ended": ended}), flush=True)
    else:
        asyncio.run(step(dsn, number))


# --- the orchestration (this interpreter, the project's venv) ------------------------------------------


def worker_peak_rss_mb(pid: int) -> float | None:
    """A worker's peak RSS, or None if it is gone."""
    from _common import peak_rss_mb

    with contextlib.suppress(OSError):
        return peak_rss_mb(pid)
    return None


def _measured_pid(pid: int, profiled: bool) -> int:
    """The worker's own process: under ``--profile`` the process started is py-spy, the worker its child."""
    if not profiled:
        return pid
    import psutil

    children = psutil.Process(pid).children()
    return children[0].pid if children else pid


def _python_can_import(python: str, module: str) -> bool:
    try:
        return (
            subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=60).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def interpreter_for(system: str, oban_python: str | None) -> tuple[str | None, str]:
    """(python, "") to run the system with, or (None, why it cannot run here)."""
    module = {"longops": "longops", "pgqueuer": "pgqueuer", "procrastinate": "procrastinate", "oban": "oban"}[
        system
    ]
    if system != "oban":
        if _python_can_import(sys.executable, module):
            return sys.executable, ""
        return None, f"not installed: pip install -e '.[bench]' (needs {module})"
    candidates = [oban_python] if oban_python else [sys.executable]
    for python in candidates:
        if python and _python_can_import(python, "oban"):
            return python, ""
    if sys.version_info < (3, 12) and not oban_python:
        return None, (
            f"oban needs Python >= 3.12 (this is {sys.version_info.major}.{sys.version_info.minor}): "
            "pass --oban-python (or LONGOPS_BENCH_OBAN_PYTHON) naming a Python 3.12+ with `pip install oban psutil`"
        )
    return None, f"{candidates[0]} cannot import oban: pip install oban"


async def _poll(dsn: str, sql: str) -> tuple[int, int, float | None]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        done, failed, last = await conn.fetchrow(sql)
        return int(done or 0), int(failed or 0), float(last) if last is not None else None
    finally:
        await conn.close()


@contextlib.contextmanager
def workers(
    system: str,
    python: str,
    dsn: str,
    count: int,
    concurrency: int,
    workdir: Path,
    profile: Path | None,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(count):
            log = (workdir / f"{system}-worker-{n}.log").open("wb")
            if system == "longops":
                command = [python, "-m", "longops", "engine"]
                env = {
                    **os.environ,
                    "LONGOPS_DATABASE_URL": dsn,
                    "LONGOPS_HANDLERS": "noop_handlers",
                    "LONGOPS_WORKER_CONCURRENCY": str(concurrency),
                    "LONGOPS_LOG_LEVEL": "INFO",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")])),
                }
            else:
                command = [python, __file__, "--worker", system, dsn, str(concurrency)]
                env = dict(os.environ)
            if profile is not None:
                from _common import profile_command

                command = profile_command(profile / f"{system}-worker-{n}.txt", *command)
            processes.append(
                subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
            )
        ready = "longops engine running" if system == "longops" else "ready"
        deadline = time.monotonic() + 90
        for n, process in enumerate(processes):
            path = workdir / f"{system}-worker-{n}.log"
            while ready not in path.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{system} worker {n} did not start:\n{path.read_text(errors='replace')[-3000:]}"
                    )
                time.sleep(0.1)
        time.sleep(1.0)  # past startup (leader election, first idle polls)
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT if profile is not None else signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_system(
    system: str, python: str, dsn: str, args: argparse.Namespace, concurrency: int
) -> dict[str, Any]:
    def step(role: str, number: int = 0) -> str:
        done = subprocess.run(
            [python, __file__, f"--{role}", system, dsn, str(number)],
            capture_output=True,
            text=True,
            timeout=600,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")])),
            },
        )
        if done.returncode != 0:
            raise RuntimeError(f"{system} {role} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    step("setup")
    with (
        tempfile.TemporaryDirectory(prefix=f"longops-bench-jobs-{system}-") as tmp,
        workers(system, python, dsn, args.workers, concurrency, Path(tmp), args.profile) as procs,
    ):
        out = step("enqueue", args.jobs)
        times = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
        deadline = time.monotonic() + args.timeout
        while True:
            done, failed, last = asyncio.run(_poll(dsn, DONE_SQL[system]))
            if done + failed >= args.jobs:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{system}: only {done} of {args.jobs} jobs done after {args.timeout} s")
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{system}: a worker process exited")
            time.sleep(0.2)
        peaks = [worker_peak_rss_mb(_measured_pid(p.pid, args.profile is not None)) for p in procs]
    assert last is not None
    seconds = last - times["started"]
    return {
        "system": system,
        "concurrency": concurrency,
        "jobs": done,
        "failed": failed,
        "enqueue_seconds": times["ended"] - times["started"],
        "seconds": seconds,
        "jobs_per_second": done / seconds,
        "peak_rss_mb": peaks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes per system")
    parser.add_argument(
        "--concurrency",
        type=int,
        action="append",
        help="jobs in flight per worker process (repeat to run several); default 100",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the last job")
    parser.add_argument("--oban-python", default=os.environ.get("LONGOPS_BENCH_OBAN_PYTHON"))
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the worker processes")
    for role in ("setup", "enqueue", "worker"):
        parser.add_argument(f"--{role}", nargs=3, metavar=("SYSTEM", "DSN", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    for role in ("setup", "enqueue", "worker"):
        if getattr(args, role):
            system, dsn, number = getattr(args, role)
            child(role, system, dsn, int(number))
            return

    sys.path.insert(0, str(BENCH))
    from _common import dsn, fresh_database, postgres_server, print_machine, summarize_profile

    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    concurrencies = args.concurrency or [100]
    print_machine()
    print(
        f"{args.jobs:,} no-op jobs, enqueued in bulk, {args.workers} worker processes per system, "
        "each system in its own fresh database"
    )
    print(
        f"{'system':<14} {'concurrency':>11} {'jobs':>7} {'failed':>6} {'enqueue s':>9} {'total s':>8} "
        f"{'jobs/s':>7}  worker peak RSS MB"
    )
    with postgres_server() as server:
        for system in args.systems:
            python, why = interpreter_for(system, args.oban_python)
            for concurrency in concurrencies:
                if python is None:
                    print(f"{system:<14} {concurrency:>11}  not run: {why}", flush=True)
                    continue
                try:
                    with fresh_database(server) as url:
                        r = run_system(system, python, dsn(url), args, concurrency)
                except Exception as exc:  # one system failing must not stop the others
                    print(f"{system:<14} {concurrency:>11}  failed: {type(exc).__name__}: {exc}", flush=True)
                    continue
                peaks = ", ".join(f"{p:.0f}" if p is not None else "?" for p in r["peak_rss_mb"])
                note = ""
                if system == "longops":
                    note = f"  (target >= {TARGET_LONGOPS:,}: {'met' if r['jobs_per_second'] >= TARGET_LONGOPS else 'NOT met'})"
                print(
                    f"{system:<14} {concurrency:>11} {r['jobs']:>7} {r['failed']:>6} {r['enqueue_seconds']:>9.2f} "
                    f"{r['seconds']:>8.2f} {r['jobs_per_second']:>7.0f}  {peaks}{note}",
                    flush=True,
                )
                if args.profile is not None:
                    for n in range(args.workers):
                        path = args.profile / f"{system}-worker-{n}.txt"
                        if path.exists():
                            print(summarize_profile(path))


if __name__ == "__main__":
    main()
