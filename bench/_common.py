"""Shared pieces of the benchmarks: databases, a simulator process, peak memory."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
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
from tests.support.postgres import dsn, fresh_database, postgres_server  # noqa: E402
from tests.support.processes import cluster, free_port, wait_for  # noqa: E402
from tests.support.servers import app_in_loop  # noqa: E402
from tests.support.statements import StatementCounter  # noqa: E402

__all__ = [
    "StatementCounter",
    "app_in_loop",
    "cluster",
    "current_leader_pid",
    "dsn",
    "query",
    "requests_for",
    "terms",
    "wait_for",
]


def reference_workload_ms(rounds: int = 5) -> float:
    """Milliseconds for a fixed pure-Python workload on one core (best of ``rounds``): JSON encoding
    and decoding of a 1 KB record 20,000 times, much like the per-item work of ingestion.

    The machine's speed is not constant: the same code on the same kind of VM measured 0.34 and
    0.92 ms of CPU per API request on different days. Printed beside the figures, it tells a
    slower code from a slower machine: a run whose figures fall with this one rising is the machine.
    """
    record = {"custom_id": "req-000001", "result": {"type": "succeeded", "text": "x" * 900}}
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(20_000):
            json.loads(json.dumps(record))
        best = min(best, time.perf_counter() - start)
    return best * 1000


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.machine()


def print_machine() -> None:
    """One line naming the machine and its reference speed (see :func:`reference_workload_ms`)."""
    print(
        f"machine: {os.cpu_count()} cores, {_cpu_model()}, "
        f"Python {platform.python_version()}; reference workload {reference_workload_ms():.0f} ms "
        "(lower is faster)",
        flush=True,
    )


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident memory of this process (or of ``pid``) so far, in MiB; ``OSError`` if that
    process is gone.

    Read from ``VmHWM``: ``ru_maxrss`` would also count the high-water mark of the parent this
    process was forked from, which for a benchmark's child is the setup phase, not the workload.
    """
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no VmHWM for process {pid or 'self'}")


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
def simulator_process_pid(*args: str, state_dir: str | None = None) -> Iterator[tuple[str, int]]:
    """``longops simulator`` in its own process (its CPU and memory are not ours), state on disk;
    yields its URL and process id (to attach a profiler). ``state_dir``:
    start from batches already stored there (see ``SimulatorState``), instead of an empty one."""
    port = free_port()
    with contextlib.ExitStack() as stack:
        state = state_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="longops-sim-"))
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
            yield url, process.pid
        finally:
            process.kill()
            process.wait()


def py_spy() -> str:
    """The ``py-spy`` executable beside this interpreter (a profiling tool, not a runtime dependency:
    ``pip install py-spy``)."""
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return str(exe)


def _record(out: Path, *, gil: bool = False) -> list[str]:
    """``py-spy record`` writing collapsed stacks (raw) to ``out``; ``gil``: only the thread holding
    the GIL (the event loop's CPU, not idle driver or pool threads)."""
    return [
        py_spy(),
        "record",
        *(["--gil"] if gil else []),
        "--nolineno",
        "--format",
        "raw",
        "--rate",
        "250",
        "-o",
        str(out),
    ]


def profile_command(out: Path, *command: str) -> list[str]:
    """``command`` run under ``py-spy record`` writing collapsed stacks (raw) to ``out``."""
    return [*_record(out), "--", *command]


@contextlib.contextmanager
def profiling_pid(pid: int, out: Path, *, gil: bool = False) -> Iterator[None]:
    """Sample a running process with py-spy (collapsed stacks to ``out``) for the duration of the block."""
    spy = subprocess.Popen(
        [*_record(out, gil=gil), "--pid", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # let it attach
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from a py-spy raw (collapsed stacks) file."""
    from collections import Counter

    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        total += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples", "  self%  function"]
    lines += [f"  {100 * n / total:5.1f}  {frame}" for frame, n in own.most_common(top)]
    lines += ["  incl%  function"]
    lines += [f"  {100 * n / total:5.1f}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)
