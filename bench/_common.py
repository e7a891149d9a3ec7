"""Shared pieces of the benchmarks: databases, a simulator process, peak memory."""

from __future__ import annotations

import contextlib
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The benchmarks reuse the test suite's process and database helpers.
from tests.support.harness import requests_for  # noqa: E402
from tests.support.leadership import current_leader_pid, query, terms  # noqa: E402
from tests.support.postgres import fresh_database, postgres_server  # noqa: E402
from tests.support.processes import cluster, free_port, wait_for  # noqa: E402

__all__ = ["cluster", "current_leader_pid", "query", "requests_for", "terms", "wait_for"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Read from ``VmHWM``: ``ru_maxrss`` would also count the high-water mark of the parent this
    process was forked from, which for a benchmark's child is the setup phase, not the workload.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def database(backend: str) -> Iterator[str]:
    """A fresh, empty database URL: a temporary SQLite file, or a new PostgreSQL database."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="longops-bench-") as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    with postgres_server() as server, fresh_database(server) as url:
        yield url


@contextlib.contextmanager
def simulator_process(*args: str) -> Iterator[str]:
    """``longops simulator`` in its own process (its CPU and memory are not ours), state on disk."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="longops-sim-") as state:
        process = subprocess.Popen(
            [sys.executable, "-m", "longops", "simulator", "--port", str(port), "--state-dir", state, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(url + "/_simulator/stats", timeout=1)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            yield url
        finally:
            process.kill()
            process.wait()
