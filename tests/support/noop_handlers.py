"""A job type for tests that need a generic job (``LONGOPS_HANDLERS=tests.support.noop_handlers``)."""

from __future__ import annotations

from typing import Any

from longops.handlers import JobContext, handler

NOOP_JOB_TYPE = "noop_for_tests"


@handler(NOOP_JOB_TYPE, max_attempts=1)
async def noop(ctx: JobContext, input: Any) -> Any:
    return input
