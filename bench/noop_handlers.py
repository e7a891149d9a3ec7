"""The job type of ``bench/jobs.py``: a handler that does nothing (``LONGOPS_HANDLERS=noop_handlers``)."""

from __future__ import annotations

from typing import Any

from longops.handlers import JobContext, handler

NOOP_JOB_TYPE = "bench_noop"


@handler(NOOP_JOB_TYPE, max_attempts=1)
async def noop(ctx: JobContext, input: Any) -> None:
    return None
