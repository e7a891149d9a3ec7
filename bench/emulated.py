"""Emulated batches: requests per second through ``openai_compatible``, and peak memory.

One ``longops serve`` process (API and engine) sends a batch's requests itself to the simulator's
live ``/v1/chat/completions``, the simulator in its own process (its CPU is not ours). Timed from
the batch's creation (its ``created_at``) to its ``completed_at``, both set by the server. Rows:

* 20,000 requests at concurrency 64 with 0 ms of answer latency (target ≥ 1,500 requests/s) and
  with 200 ms (target ≥ 0.9 × 64 / 0.2 s = 288 requests/s);
* 100,000 requests at 0 ms, created from an uploaded JSONL file (streamed, as ``longops submit``
  does for a large file): the server's peak RSS (target < 300 MB) and its largest resident memory
  sampled while sending.

It also prints the simulator's peak of requests in flight (never above the concurrency) and
checks every item succeeded and was sent once.

    python bench/emulated.py [--backend postgres|sqlite] [--requests 20000] [--rss-requests 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from longops import Client

from _common import cluster, database, peak_rss_mb, print_machine, profiling_pid, summarize_profile, wait_for


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def rss_mb(pid: int) -> float:
    """Resident memory of a process now, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS for process {pid}")


def run(
    api: str,
    simulator: str,
    requests: int,
    latency: float,
    server_pid: int,
    sending_rss: list[float],
    *,
    upload: bool = False,
) -> tuple[float, int, int]:
    """(requests/s, peak in flight, calls) for one batch of ``requests`` at ``latency`` seconds;
    appends the server's resident memory, sampled while it sends, to ``sending_rss``. ``upload``:
    create it from a JSONL file, streamed (``POST /v1/files`` and a ``batch_ingest`` job, what
    ``longops submit`` does above 16 MiB), instead of one JSON body the server parses whole."""
    httpx.post(f"{simulator}/_simulator/config", json={"live_latency_seconds": latency}).raise_for_status()
    before = httpx.get(f"{simulator}/_simulator/stats").json()["live"]["calls"]
    body = {
        "provider": "openai_compatible",
        "requests": [
            {
                "custom_id": f"r{i}",
                "params": {"model": "sim-chat", "messages": [{"role": "user", "content": f"question {i}"}]},
            }
            for i in range(requests)
        ],
    }
    if upload:
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as lines:
            for request in body["requests"]:
                lines.write(json.dumps(request) + "\n")
        try:
            with Client(base_url=api, timeout=300) as client:
                batch_id = client.batches.create_from_file(lines.name, provider="openai_compatible").id
        finally:
            os.unlink(lines.name)
    else:
        created = httpx.post(f"{api}/v1/batches", json=body, timeout=300)
        created.raise_for_status()
        batch_id = created.json()["id"]

    def ended() -> dict[str, object] | None:
        sending_rss.append(rss_mb(server_pid))
        batch: dict[str, object] = httpx.get(f"{api}/v1/batches/{batch_id}", timeout=30).json()
        return batch if batch["completed_at"] else None

    batch = wait_for(ended, 3600, f"batch {batch_id} to end", interval=0.25)
    counts = batch["request_counts"]
    assert isinstance(counts, dict) and counts["succeeded"] == requests, counts
    elapsed = _at(str(batch["completed_at"])) - _at(str(batch["created_at"]))
    live = httpx.get(f"{simulator}/_simulator/stats").json()["live"]
    return requests / elapsed, live["peak_in_flight"], live["calls"] - before


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rss-requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile", type=Path, help="py-spy the server's event loop (GIL) to this file")
    args = parser.parse_args()
    print_machine()
    env = {
        "LONGOPS_OPENAI_COMPATIBLE_CONCURRENCY": str(args.concurrency),
        "LONGOPS_LOG_LEVEL": "WARNING",
        "LONGOPS_ACCESS_LOG": "false",
        "LONGOPS_MAX_REQUEST_BYTES": str(1024**3),
    }
    with (
        tempfile.TemporaryDirectory(prefix="longops-emulated-") as workdir,
        database(args.backend) as db_url,
        cluster(Path(workdir), LONGOPS_DATABASE_URL=db_url, **env) as group,
    ):
        simulator = group.start_simulator()
        group.env["LONGOPS_OPENAI_COMPATIBLE_BASE_URL"] = f"{simulator}/v1"
        api = group.start_server("server")
        server_pid = group.processes[-1].pid
        simulator_pid = group.processes[0].pid
        for latency in (0.0, 0.2):
            start = time.perf_counter()
            cpu = cpu_seconds(server_pid), cpu_seconds(simulator_pid)
            with contextlib.ExitStack() as stack:
                if args.profile is not None and latency == 0:
                    stack.enter_context(profiling_pid(server_pid, args.profile, gil=True))
                rate, peak, calls = run(api, simulator, args.requests, latency, server_pid, [])
            server_ms = (cpu_seconds(server_pid) - cpu[0]) * 1000 / args.requests
            simulator_ms = (cpu_seconds(simulator_pid) - cpu[1]) * 1000 / args.requests
            print(
                f"{args.backend}: {args.requests:,} requests, concurrency {args.concurrency}, "
                f"latency {latency * 1000:.0f} ms: {rate:,.0f} requests/s "
                f"(peak in flight {peak}, calls {calls:,}, wall {time.perf_counter() - start:.1f} s; "
                f"CPU per request: server {server_ms:.2f} ms, simulator {simulator_ms:.2f} ms)",
                flush=True,
            )
        if args.profile is not None:
            print(summarize_profile(args.profile))
        if args.rss_requests:
            sending: list[float] = []
            rate, peak, calls = run(api, simulator, args.rss_requests, 0.0, server_pid, sending, upload=True)
            print(
                f"{args.backend}: {args.rss_requests:,} requests at 0 ms, created from an uploaded file: "
                f"{rate:,.0f} requests/s, server peak RSS {peak_rss_mb(server_pid):.0f} MB (every run of "
                f"this process included), at most {max(sending):.0f} MB while sending "
                f"(peak in flight {peak}, calls {calls:,})",
                flush=True,
            )


if __name__ == "__main__":
    main()
