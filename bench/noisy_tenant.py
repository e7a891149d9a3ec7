"""Another organization's reads while one posts large batch bodies (issue 19, class 4).

A real `longops serve --no-engine` process on a fresh SQLite database (or PostgreSQL with
`--backend postgres`). One client posts `--posts` bodies of about `--mb` MB each to
`POST /v1/batches`, 36 MB by default, each refused at its last request (a `custom_id` that breaks
the pattern), so the server decodes and validates the whole body and stores nothing. Meanwhile
another client reads `GET /v1/batches` in a loop. Printed: that reader's latency (median, p90, max)
alone first, then during the posts, and the machine's reference figure (bench/_common.py).

    python bench/noisy_tenant.py
    python bench/noisy_tenant.py --posts 3 --mb 10 --backend postgres
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from _common import cluster, fresh_database, postgres_server, reference_workload_ms


def _body(megabytes: int) -> bytes:
    request = {
        "custom_id": "r",
        "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "x" * 900}]},
    }
    count = megabytes * 1024 * 1024 // 1000
    requests = [dict(request, custom_id=f"r{i}") for i in range(count)]
    requests[-1]["custom_id"] = "bad id"
    return json.dumps({"provider": "simulator", "requests": requests}).encode()


def _reads(url: str, stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            assert client.get("/v1/batches").status_code == 200
            latencies.append(1000 * (time.perf_counter() - started))


def _summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return (
        f"n={len(ordered)} median={statistics.median(ordered):.1f}ms p90={p90:.1f}ms max={ordered[-1]:.1f}ms"
    )


def run(database_url: str, workdir: Path, posts: int, megabytes: int) -> None:
    body = _body(megabytes)
    with cluster(workdir, LONGOPS_DATABASE_URL=database_url, LONGOPS_ACCESS_LOG="false") as group:
        url = group.start_server("api", "--no-engine")
        for label, noisy in (("alone", False), ("during the posts", True)):
            stop, latencies = threading.Event(), []
            reader = threading.Thread(target=_reads, args=(url, stop, latencies))
            reader.start()
            if noisy:
                with httpx.Client(base_url=url, timeout=120) as client:
                    for _ in range(posts):
                        answer = client.post(
                            "/v1/batches", content=body, headers={"content-type": "application/json"}
                        )
                        assert answer.status_code == 422, answer.text[:200]
            else:
                time.sleep(3)
            stop.set()
            reader.join()
            print(f"  GET /v1/batches {label}: {_summary(latencies)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--posts", type=int, default=5)
    parser.add_argument("--mb", type=int, default=36)
    args = parser.parse_args()
    print(f"reference workload: {reference_workload_ms():.0f} ms")
    print(f"{args.backend}: {args.posts} posts of about {args.mb} MB, refused at their last request")
    with tempfile.TemporaryDirectory(prefix="longops-noisy-") as tmp:
        if args.backend == "sqlite":
            run(f"sqlite:///{tmp}/longops.db", Path(tmp), args.posts, args.mb)
        else:
            with postgres_server() as server, fresh_database(server) as url:
                run(url, Path(tmp), args.posts, args.mb)


if __name__ == "__main__":
    main()
