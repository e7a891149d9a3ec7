"""Job handlers: a Python function registered as a job type, and what it sees while it runs.

.. code-block:: python

    import longops

    @longops.handler("ingest_report", max_attempts=3, timeout_seconds=3600)
    async def ingest_report(ctx: longops.JobContext, input: dict) -> dict:
        for i, part in enumerate(parts):
            if ctx.cancelled:
                raise longops.Cancelled()
            await ctx.progress(i + 1, len(parts), message=f"part {i + 1}")
        return {"rows": 123}

A handler is registered when its module is imported. Every process, API and engine alike, imports
the modules named in ``LONGOPS_HANDLERS`` (comma-separated import paths) when it starts, so they all
agree on the known job types and their options (``POST /v1/jobs`` answers 422 for any other type).

What the workers guarantee (``longops.engine.workers`` enforces it):

* **Input and result are JSON.** The result must serialize to JSON (no NaN); it is stored as is.
* **At least once.** A job whose worker dies (its lease is not renewed) runs again elsewhere, as
  attempt + 1, up to ``max_attempts``; then it fails with stop reason ``max_attempts``. A job is
  *completed* once only, but a handler may have *started* more than once: make it idempotent
  (``ctx.job_id`` is a stable key).
* **Exceptions are retried.** An exception fails the attempt; the job runs again after
  ``JOB_RETRY_BACKOFF_SECONDS × 2^(attempt−1)`` (while it waits it stays ``running`` and shows the
  last ``error``), and once ``max_attempts`` attempts have failed it ends ``failed`` with stop
  reason ``handler_error`` and ``error`` = ``{"type": <exception class>, "message": str(exc)}``.
  Raise :class:`PermanentError` to fail at once, without retrying.
* **Timeouts are final.** An attempt running longer than ``timeout_seconds`` is cancelled and the
  job ends ``failed`` with stop reason ``timeout`` (running it again would spend the time again).
* **Cancellation is cooperative.** ``POST /v1/jobs/{id}/cancel`` on a running job sets
  ``ctx.cancelled`` at the handler's next heartbeat (every third of ``JOB_LEASE_SECONDS``) or
  progress write (at most every half second while it reports); the handler should stop (raise
  :class:`Cancelled`, or return). A job whose cancel was requested ends ``cancelled`` however its
  handler ends. A handler that ignores the request is cancelled (``asyncio`` cancellation) one
  lease period later.
* **Concurrency.** ``concurrency=N`` caps the jobs of this type running at once across all
  instances; each instance also caps all its jobs at ``WORKER_CONCURRENCY``.
* Handlers share the engine's event loop: never block it (use ``asyncio.to_thread`` for blocking
  or CPU-heavy work), or heartbeats stall and leases expire.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

HandlerFn = Callable[["JobContext", Any], Awaitable[Any]]
F = TypeVar("F", bound=HandlerFn)

JOB_TYPE_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Job types the service defines itself; a handler cannot take these names.
RESERVED_JOB_TYPES = frozenset({"llm_batch", "batch_ingest"})
MAX_MESSAGE_CHARS = 1000


class Cancelled(Exception):
    """Raise from a handler to stop because the job was cancelled; the job ends ``cancelled``."""


class PermanentError(Exception):
    """Raise from a handler to fail the job at once, without retrying.

    The job's ``error`` is ``{"type": error_type, "message": message}``.
    """

    def __init__(self, message: str, *, error_type: str = "permanent_error") -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type


class HandlerLoadError(RuntimeError):
    """A module named in ``LONGOPS_HANDLERS`` could not be imported (the message says which and why)."""


@dataclass(frozen=True)
class HandlerOptions:
    max_attempts: int = 3
    timeout_seconds: float = 3600.0
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1 (or None for no limit)")


@dataclass(frozen=True)
class Handler:
    name: str
    fn: HandlerFn
    options: HandlerOptions


_registry: dict[str, Handler] = {}


def handler(
    name: str,
    *,
    max_attempts: int = 3,
    timeout_seconds: float = 3600.0,
    concurrency: int | None = None,
) -> Callable[[F], F]:
    """Register ``async def fn(ctx, input) -> result`` as the handler of job type ``name``."""
    options = HandlerOptions(max_attempts, timeout_seconds, concurrency)
    if not JOB_TYPE_PATTERN.match(name):
        raise ValueError(f"job type {name!r} must match {JOB_TYPE_PATTERN.pattern}")
    if name in RESERVED_JOB_TYPES:
        raise ValueError(f"job type {name!r} is built into longops; choose another name")

    def register(fn: F) -> F:
        is_async = inspect.iscoroutinefunction(fn)  # (a variable: the TypeGuard would narrow away F)
        if not is_async:
            raise TypeError(f"the handler of {name!r} must be an async function (async def)")
        existing = _registry.get(name)
        if existing is not None and _origin(existing.fn) != _origin(fn):
            raise ValueError(f"job type {name!r} is already registered by {_origin(existing.fn)}")
        _registry[name] = Handler(name, fn, options)
        return fn

    return register


def _origin(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def registered_handlers() -> dict[str, Handler]:
    """The handlers registered in this process, by job type."""
    return dict(_registry)


def load_handlers(modules: str | None) -> None:
    """Import the handler modules of ``LONGOPS_HANDLERS`` (comma-separated import paths).

    The current directory is searched first, as ``python -m`` and ``uvicorn --app-dir .`` do, so a
    ``handlers.py`` beside the command is found as ``handlers`` even when ``longops`` is an installed
    script (whose own directory, not the current one, would otherwise head ``sys.path``).
    """
    names = [name for name in (part.strip() for part in (modules or "").split(",")) if name]
    if names and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise HandlerLoadError(
                f"LONGOPS_HANDLERS: cannot import handler module {name!r} (searched the current directory "
                f"{os.getcwd()} and the installed packages): {type(exc).__name__}: {exc}"
            ) from exc


@dataclass
class AttemptState:
    """What a handler's context shares with the worker running it (the worker's side of the context)."""

    cancel_requested: bool = False
    progress: dict[str, Any] | None = None
    progress_dirty: bool = False
    progress_version: int = 0
    notify: Callable[[], None] | None = field(default=None, repr=False)  # called on each report


def _number(value: object, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        raise ValueError(f"progress {what} must be a non-negative number, not {value!r}")
    return value


class JobContext:
    """What a running handler knows about its job, and how it reports back."""

    def __init__(
        self,
        *,
        job_id: str,
        job_type: str,
        org_id: str,
        attempt: int,
        max_attempts: int,
        state: AttemptState | None = None,
    ) -> None:
        self.job_id = job_id
        self.job_type = job_type
        self.org_id = org_id
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.state = state if state is not None else AttemptState()

    @property
    def cancelled(self) -> bool:
        """True once a cancel of this job was requested (refreshed with each heartbeat)."""
        return self.state.cancel_requested

    async def progress(
        self, completed: int | float, total: int | float | None = None, message: str | None = None
    ) -> None:
        """Report progress; the latest report is visible through the API within about half a second.

        Reports are written in the background, in bulk, so calling this often costs nothing extra.
        """
        report = {
            "completed": _number(completed, "completed"),
            "total": None if total is None else _number(total, "total"),
            "message": None if message is None else str(message)[:MAX_MESSAGE_CHARS],
        }
        self.state.progress = report
        self.state.progress_dirty = True
        self.state.progress_version += 1
        if self.state.notify is not None:
            self.state.notify()
        await asyncio.sleep(0)
