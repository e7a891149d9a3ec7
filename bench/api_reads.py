"""`GET /v1/batches/{id}` under 64 concurrent clients, measured with wrk against a real server.

For each backend (SQLite, and PostgreSQL: LONGOPS_TEST_POSTGRES_URL if set, else an embedded one) a
fresh database gets an API key, then a real `longops serve` process starts (API and engine, with
the bundled simulator, log level INFO as by default), a batch of 1,000 requests is created through
the API and runs to `completed`; then `wrk` (2 threads, 64 connections, 20 s after a 3 s warm-up)
reads that batch with the key, over loopback. Printed: requests/s, latency p50/p90/p99 (wrk's own
latency distribution), errors (non-2xx and socket errors: any makes the run invalid), the server's
CPU time per request (user + system, all its threads: steadier than requests/s on a shared machine),
the application's own p99 (from the durations of the server's access lines, `ACCESS_LOG` on: time in
the app, without the waits before it that wrk's latency also counts), the PostgreSQL connections the server opened during the load (`pg_stat_database.sessions`: pool
churn shows here), and the server's peak RSS (`VmHWM`). The two cores are shared by wrk, the server
and PostgreSQL. `--profile DIR` samples the server with `py-spy record --gil` during the load (only
the thread holding the GIL: the event loop's CPU, not idle driver threads) and prints a summary.

wrk is a Debian package: `apt-get install -y wrk` (it is not a Python dependency, and no test or CI
step needs it).

    python bench/api_reads.py                                 # both backends
    python bench/api_reads.py --backend postgres --duration 10
    python bench/api_reads.py --backend sqlite --profile /tmp/prof   # py-spy the server meanwhile
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from longops.store import api_keys
from longops.store.db import open_database
from longops.store.migrate import upgrade_database

from _common import (
    database,
    dsn,
    free_port,
    peak_rss_mb,
    print_machine,
    profiling_pid,
    requests_for,
    summarize_profile,
    wait_for,
)

TARGET_RPS = 1500
TARGET_P99_MS = 100.0


@dataclass
class Server:
    url: str
    pid: int
    key: str
    batch_id: str
    log_path: Path


def prepare_database(db_url: str) -> str:
    """Migrate the fresh database and create an API key (so every request is authenticated)."""

    async def run() -> str:
        db = open_database(db_url)
        try:
            await upgrade_database(db)
            return (await api_keys.create_key(db, "bench")).secret
        finally:
            await db.dispose()

    return asyncio.run(run())


@contextlib.contextmanager
def running_server(db_url: str, workdir: Path, items: int, extra_env: dict[str, str]) -> Iterator[Server]:
    key = prepare_database(db_url)
    port = free_port()
    env = {
        **os.environ,
        "LONGOPS_DATABASE_URL": db_url,
        "LONGOPS_SIMULATOR_PROCESSING_SECONDS": "0",
        "LONGOPS_SIMULATOR_STATE_DIR": str(workdir / "sim"),
        **extra_env,
    }
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "longops", "serve", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise SystemExit(f"the server exited: {log_path.read_text()[-2000:]}")
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, 60, "the server to listen")
        texts = [f"question {i}" for i in range(items)]
        created = httpx.post(
            url + "/v1/batches",
            json={"provider": "simulator", "requests": requests_for(*texts)},
            headers=headers,
            timeout=60,
        )
        created.raise_for_status()
        batch_id = str(created.json()["id"])

        def completed() -> bool:
            batch = httpx.get(f"{url}/v1/batches/{batch_id}", headers=headers, timeout=10).json()
            if batch["status"] not in ("created", "running", "completed"):
                raise SystemExit(f"the batch ended {batch['status']}: {batch}")
            return bool(batch["status"] == "completed")

        wait_for(completed, 120, "the batch to complete", interval=0.2)
        yield Server(url, process.pid, key, batch_id, log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms) and error counts from ``wrk --latency`` output."""
    result: dict[str, Any] = {"errors": 0, "non_2xx": 0}
    for line in output.splitlines():
        line = line.strip()
        if match := re.fullmatch(r"(50|75|90|99)%\s+(\S+)", line):
            result[f"p{match.group(1)}_ms"] = _ms(match.group(2))
        elif match := re.match(r"(\d+) requests in ([\d.]+\w+)", line):
            result["requests"] = int(match.group(1))
            result["seconds"] = _ms(match.group(2)) / 1000
        elif line.startswith("Requests/sec:"):
            result["rps"] = float(line.split()[1])
        elif line.startswith("Non-2xx or 3xx responses:"):
            result["non_2xx"] = int(line.split()[-1])
        elif line.startswith("Socket errors:"):
            result["errors"] = sum(int(n) for n in re.findall(r"\d+", line))
    missing = {"rps", "p50_ms", "p99_ms", "requests"} - set(result)
    if missing:
        raise ValueError(f"could not read {sorted(missing)} from wrk's output:\n{output}")
    return result


def wrk_executable() -> str:
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("this benchmark needs wrk, a load tool (Debian: apt-get install -y wrk)")
    return exe


def wrk(url: str, key: str, *, threads: int, connections: int, seconds: float) -> dict[str, Any]:
    command = [
        wrk_executable(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-H",
        f"Authorization: Bearer {key}",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(done.stdout)


def postgres_sessions(db_url: str) -> int | None:
    """Sessions ever opened on this PostgreSQL database (``pg_stat_database.sessions``, PostgreSQL 14+):
    its growth during the load is the server's connection churn. None on SQLite."""
    if not db_url.startswith("postgres"):
        return None

    async def read() -> int | None:
        import asyncpg
        from sqlalchemy.engine import make_url

        conn = await asyncpg.connect(dsn(db_url))
        try:
            value = await conn.fetchval(
                "SELECT sessions FROM pg_stat_database WHERE datname = $1", make_url(db_url).database
            )
            return None if value is None else int(value)
        except asyncpg.UndefinedColumnError:
            return None
        finally:
            await conn.close()

    return asyncio.run(read())


_ACCESS_DURATION = re.compile(r" longops\.access: .* (\d+(?:\.\d+)?)ms$")


def app_durations_ms(log_text: str) -> list[float]:
    """The durations of the access lines in a server log: the time the application spent on each
    request, without the time it waited in the event loop or the kernel before (wrk's latency has both)."""
    return [float(m.group(1)) for line in log_text.splitlines() if (m := _ACCESS_DURATION.search(line))]


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_case(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    with (
        tempfile.TemporaryDirectory(prefix="longops-bench-api-") as tmp,
        database(backend) as db_url,
        running_server(db_url, Path(tmp), args.items, extra_env) as server,
    ):
        url = f"{server.url}/v1/batches/{server.batch_id}"
        check = httpx.get(url, headers={"Authorization": f"Bearer {server.key}"})
        check.raise_for_status()
        wrk(url, server.key, threads=args.threads, connections=args.connections, seconds=args.warmup)
        with contextlib.ExitStack() as stack:
            if args.profile is not None:
                stack.enter_context(
                    profiling_pid(server.pid, args.profile / f"server-{backend}.txt", gil=True)
                )
            sessions = postgres_sessions(db_url)
            logged_before = len(app_durations_ms(server.log_path.read_text(errors="replace")))
            cpu = psutil.Process(server.pid).cpu_times()
            result = wrk(
                url, server.key, threads=args.threads, connections=args.connections, seconds=args.duration
            )
            cpu_after = psutil.Process(server.pid).cpu_times()
            sessions_after = postgres_sessions(db_url)
            durations = app_durations_ms(server.log_path.read_text(errors="replace"))[logged_before:]
        server_cpu = cpu_after.user + cpu_after.system - cpu.user - cpu.system
        result["server_cpu_ms_per_request"] = 1000 * server_cpu / max(result["requests"], 1)
        result["new_connections"] = (
            sessions_after - sessions if sessions is not None and sessions_after is not None else None
        )
        result["app_p99_ms"] = percentile(durations, 0.99)
        result.update(backend=backend, peak_rss_mb=peak_rss_mb(server.pid), bytes=len(check.content))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load first")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--items", type=int, default=1000, help="requests in the batch that is read")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra server environment"
    )
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the server; summary printed")
    args = parser.parse_args()
    wrk_executable()
    print_machine()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, GET /v1/batches/{{id}} "
        f"({args.items} items, completed), API key on every request"
    )
    print(
        f"{'backend':<10} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'server CPU ms/req':>18} {'app p99 ms':>10} {'new DB conns':>12} {'server peak RSS MB':>19}  target (>= {TARGET_RPS} req/s, p99 < {TARGET_P99_MS:g} ms)"
    )
    for backend in backends:
        r = run_case(backend, args)
        errors = r["errors"] + r["non_2xx"]
        conns = "-" if r["new_connections"] is None else str(r["new_connections"])
        app_p99 = "-" if r["app_p99_ms"] is None else f"{r['app_p99_ms']:.1f}"
        met = r["rps"] >= TARGET_RPS and r["p99_ms"] < TARGET_P99_MS and not errors
        print(
            f"{backend:<10} {r['requests']:>9} {r['rps']:>8.0f} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {errors:>7} {r['server_cpu_ms_per_request']:>18.2f} {app_p99:>10} {conns:>12} {r['peak_rss_mb']:>19.1f}  {'met' if met else 'NOT met'}",
            flush=True,
        )
        if args.profile is not None:
            print(summarize_profile(args.profile / f"server-{backend}.txt"))


if __name__ == "__main__":
    main()
