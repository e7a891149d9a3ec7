"""Batch creation: ``POST /v1/batches`` with 10,000 requests of about 1 KB, time to 201.

A real ``longops serve --no-engine`` process (API only: the engine would start submitting the
batches and share the cores with the next request) on a fresh SQLite file or PostgreSQL database;
the same 10 MB body is posted ``--runs`` times, each a new batch. Target: under 2 s to 201.

    python bench/create.py                              # both backends
    python bench/create.py --backend postgres --profile /tmp/prof   # py-spy on the server process
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from _common import cluster, database, peak_rss_mb, print_machine, profiling_pid, summarize_profile

PROMPT = "Summarize the following text in one paragraph. " + "lorem ipsum dolor sit amet " * 33


def body(count: int) -> bytes:
    requests = [
        {
            "custom_id": f"req-{i}",
            "params": {
                "model": "claude-sim",
                "max_tokens": 512,
                "messages": [{"role": "user", "content": f"{i} {PROMPT}"}],
            },
        }
        for i in range(count)
    ]
    return json.dumps({"provider": "simulator", "requests": requests}).encode()


def run(backend: str, payload: bytes, runs: int, profile: Path | None) -> tuple[list[float], float]:
    with (
        database(backend) as db_url,
        tempfile.TemporaryDirectory(prefix="longops-create-") as workdir,
        cluster(Path(workdir), LONGOPS_DATABASE_URL=db_url, LONGOPS_LOG_LEVEL="WARNING") as group,
    ):
        url = group.start_server("api", "--no-engine")
        server = group.processes[-1].popen.pid
        timings: list[float] = []
        with contextlib.ExitStack() as stack, httpx.Client(base_url=url, timeout=120) as client:
            if profile is not None:
                stack.enter_context(profiling_pid(server, profile / f"api-{backend}.txt"))
            for _ in range(runs):
                started = time.perf_counter()
                response = client.post(
                    "/v1/batches", content=payload, headers={"Content-Type": "application/json"}
                )
                timings.append(time.perf_counter() - started)
                assert response.status_code == 201, response.text[:500]
                assert response.json()["request_counts"]["total"] == payload.count(b'"custom_id"')
        return timings, peak_rss_mb(server)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", type=Path, metavar="DIR", help="record the server with py-spy")
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    print_machine()
    payload = body(args.requests)
    print(f"body: {args.requests} requests, {len(payload) / 1e6:.1f} MB")
    print(f"{'backend':<10} {'min s':>7} {'median s':>9} {'max s':>7} {'server peak RSS MB':>19}")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        timings, rss = run(backend, payload, args.runs, args.profile)
        print(
            f"{backend:<10} {min(timings):>7.2f} {statistics.median(timings):>9.2f} {max(timings):>7.2f} {rss:>19.0f}",
            flush=True,
        )
        if args.profile is not None:
            print(summarize_profile(args.profile / f"api-{backend}.txt"))


if __name__ == "__main__":
    main()
