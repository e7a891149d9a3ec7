"""Kill the leader ten times under load; print takeover times and duplicated or lost work.

Three `longops engine` processes and one API process share a PostgreSQL database (the one named by
LONGOPS_TEST_POSTGRES_URL, else an embedded one); the simulator runs in its own process. While
batches keep arriving, the leader is SIGKILLed, a replacement engine is started, and the time from
the kill to the next term's start (the new leader's `leader_terms.acquired_at`) is recorded. At the
end every batch must have completed with each provider batch created once at the simulator and
every item final exactly once.

    python bench/failover.py [--kills 10] [--retry-seconds 1] [--batches-per-round 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from _common import cluster, current_leader_pid, database, query, requests_for, terms, wait_for


def create_batch(api: str, size: int) -> str:
    texts = [f"question {i}" for i in range(size)]
    response = httpx.post(
        f"{api}/v1/batches", json={"provider": "simulator", "requests": requests_for(*texts)}
    )
    response.raise_for_status()
    return str(response.json()["id"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--retry-seconds", type=float, default=1.0, help="LONGOPS_LEADER_RETRY_SECONDS")
    parser.add_argument("--poll-seconds", type=float, default=0.5, help="LONGOPS_POLL_INTERVAL_SECONDS")
    parser.add_argument("--batches-per-round", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=200)
    args = parser.parse_args()

    env = {
        "LONGOPS_POLL_INTERVAL_SECONDS": str(args.poll_seconds),
        "LONGOPS_POLL_JITTER_SECONDS": str(args.poll_seconds / 5),
        "LONGOPS_SUBMIT_INTERVAL_SECONDS": "0.2",
        "LONGOPS_LEADER_RETRY_SECONDS": str(args.retry_seconds),
        "LONGOPS_ANTHROPIC_MAX_REQUESTS": "50",
        "LONGOPS_INGEST_CHUNK_SIZE": "25",
        "LONGOPS_LOG_LEVEL": "WARNING",
        "LONGOPS_PROVIDER_TIMEOUT_SECONDS": "5",
        "LONGOPS_PROVIDER_CLOCK_SKEW_SECONDS": "0.2",
    }
    with (
        tempfile.TemporaryDirectory(prefix="longops-failover-") as workdir,
        database("postgres") as db_url,
        cluster(Path(workdir), LONGOPS_DATABASE_URL=db_url, **env) as group,
    ):
        simulator = group.start_simulator("--processing-seconds", "1")
        api = group.start_server("api", "--no-engine")
        engines = {e.pid: e for e in (group.start(f"engine-{n}", "engine") for n in range(3))}
        wait_for(lambda: current_leader_pid(db_url), 60, "a first leader")
        batch_ids: list[str] = []
        takeovers: list[float] = []
        for kill in range(args.kills):
            batch_ids += [create_batch(api, args.batch_size) for _ in range(args.batches_per_round)]
            time.sleep(args.poll_seconds * 2)  # let the leader get into submitting and ingesting
            leader = current_leader_pid(db_url)
            assert leader is not None
            engines.pop(leader).kill()
            killed_at = time.time()
            wait_for(lambda old=leader: current_leader_pid(db_url) not in (None, old), 60, "a new leader")
            takeovers.append(terms(db_url)[-1]["acquired_at"].timestamp() - killed_at)
            replacement = group.start(f"engine-r{kill}", "engine")
            engines[replacement.pid] = replacement
            print(f"kill {kill + 1}: takeover {takeovers[-1]:.2f}s", flush=True)

        def finished() -> bool:
            rows = query(db_url, "SELECT count(*) AS n FROM jobs WHERE status IN ('created', 'running')")
            return rows[0]["n"] == 0

        wait_for(finished, 300, "every batch to complete", interval=0.5)
        pbs = query(db_url, "SELECT count(*) AS n FROM provider_batches")[0]["n"]
        creates = httpx.get(f"{simulator}/_simulator/stats").json()["calls"]["create"]
        items = query(
            db_url,
            "SELECT count(*) AS n, count(*) FILTER (WHERE attempts > 1) AS resent, "
            "count(*) FILTER (WHERE status <> 'succeeded') AS not_done FROM items",
        )[0]
        counted = query(db_url, "SELECT sum(n_succeeded) AS s, sum(n_total) AS t FROM jobs")[0]
        expected = len(batch_ids) * args.batch_size
        duplicated = (creates - pbs) + items["resent"] + max(0, counted["s"] - counted["t"])
        lost = (expected - items["n"]) + items["not_done"] + (counted["t"] - counted["s"])
        print()
        print(
            f"kills: {args.kills}   LEADER_RETRY_SECONDS={args.retry_seconds}   POLL_INTERVAL={args.poll_seconds}"
        )
        print(
            f"takeover seconds: min {min(takeovers):.2f}   median {statistics.median(takeovers):.2f}   "
            f"max {max(takeovers):.2f}"
        )
        print(
            f"batches {len(batch_ids)}, items {expected}, provider batches {pbs}, creates at provider {creates}"
        )
        print(f"duplicated work: {duplicated}   lost work: {lost}")
        for row in query(
            db_url,
            "SELECT j.status AS job, p.status, p.error::text AS error, count(*) AS n FROM provider_batches p "
            "JOIN jobs j ON j.id = p.job_id WHERE p.status <> 'completed' OR j.status <> 'completed' "
            "GROUP BY 1, 2, 3",
        ):
            print(
                f"  not completed: job {row['job']}, provider batch {row['status']} x{row['n']}: {row['error']}"
            )


if __name__ == "__main__":
    main()
