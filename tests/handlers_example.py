"""Job handlers for tests/test_jobs.py, loaded through ``LONGOPS_HANDLERS=tests.handlers_example``.

Handlers that run in the test's own event loop (the app and engine served in-process) are steered
with the asyncio events in :data:`GATES` and report what they saw in :data:`SEEN`; handlers that run
in engine subprocesses are steered through, and report through, files in a directory named in
their input.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from longops.handlers import Cancelled, JobContext, handler

GATES: dict[str, asyncio.Event] = {}
SEEN: dict[str, str] = {}


@handler("echo", max_attempts=1)
async def echo(ctx: JobContext, input: Any) -> Any:
    return {"input": input, "attempt": ctx.attempt}


async def _until_released_or_cancelled(ctx: JobContext, gate: asyncio.Event) -> bool:
    """True once the gate opens, False once a cancel is requested."""
    while not gate.is_set():
        if ctx.cancelled:
            SEEN[ctx.job_id] = "cancelled"
            return False
        await asyncio.sleep(0.01)
    return True


@handler("stepper", max_attempts=1, timeout_seconds=60)
async def stepper(ctx: JobContext, input: Any) -> Any:
    """Reports step 1 of 3, waits for its gate, reports step 3 and returns; raises Cancelled if asked."""
    await ctx.progress(1, 3, message="step 1")
    if not await _until_released_or_cancelled(ctx, GATES[input["gate"]]):
        raise Cancelled()
    await ctx.progress(3, 3, message="done")
    return {"steps": 3}


@handler("stubborn", max_attempts=1, timeout_seconds=60)
async def stubborn(ctx: JobContext, input: Any) -> Any:
    """Sees the cancel request but returns a result anyway (the job must still end cancelled)."""
    await _until_released_or_cancelled(ctx, GATES[input["gate"]])
    return {"finished": "anyway"}


@handler("sleeper", max_attempts=3, timeout_seconds=0.3)
async def sleeper(ctx: JobContext, input: Any) -> Any:
    await asyncio.sleep(input["seconds"])
    return {"slept": input["seconds"]}


@handler("flaky", max_attempts=2)
async def flaky(ctx: JobContext, input: Any) -> Any:
    """Raises on every attempt before ``succeed_on``."""
    if ctx.attempt < input["succeed_on"]:
        raise ValueError(f"attempt {ctx.attempt} broke")
    return {"attempt": ctx.attempt}


@handler("crash_once", max_attempts=3, timeout_seconds=120)
async def crash_once(ctx: JobContext, input: Any) -> Any:
    """Attempt 1 announces itself and hangs (its process gets killed); later attempts finish."""
    marks = Path(input["dir"])
    (marks / f"started-{ctx.attempt}-{os.getpid()}").touch()
    if ctx.attempt == 1:
        await asyncio.sleep(3600)
    with (marks / "finished").open("a") as out:
        out.write(f"{ctx.attempt} {os.getpid()}\n")
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@handler("hold", max_attempts=3, timeout_seconds=120)
async def hold(ctx: JobContext, input: Any) -> Any:
    """Announces itself, then waits for a ``release`` file."""
    marks = Path(input["dir"])
    (marks / f"started-{ctx.attempt}-{os.getpid()}").touch()
    while True:  # polled: the release comes from another process
        if (marks / "release").exists():
            return {"attempt": ctx.attempt, "pid": os.getpid()}
        await asyncio.sleep(0.02)


@handler("limited", max_attempts=1, concurrency=3)
async def limited(ctx: JobContext, input: Any) -> Any:
    """Sleeps, then records when it ran and where (to measure concurrency across processes)."""
    started = time.time()
    await asyncio.sleep(input["seconds"])
    (Path(input["dir"]) / ctx.job_id).write_text(f"{started} {time.time()} {os.getpid()}")
    return {}
