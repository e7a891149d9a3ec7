"""Workers (every instance): run generic job handlers as asyncio tasks, under leases.

One :class:`Workers` loop per engine. A round, in order:

1. every third of ``JOB_LEASE_SECONDS``: renew the leases of all running attempts in one statement,
   and learn which jobs were asked to cancel (``ctx.cancelled``) and which leases were lost;
2. at most every :data:`PROGRESS_SECONDS`: write the latest progress reports, in one statement
   that also reads the cancel requests of the jobs reporting;
3. in one write transaction: write the outcomes of the attempts that ended (in bulk), then claim
   due jobs for the free local slots (``WORKER_CONCURRENCY`` minus running attempts), each type
   within its concurrency limit (``store/job_queue.py``). It claims when an attempt ended, when the
   engine was woken (a job was created), when the last claim filled every slot, and otherwise
   every ``WORKER_POLL_SECONDS``;
4. every third of the lease: reap jobs no worker will run again (cancel requested with no live
   lease; lease expired with no attempts left).

Between rounds it sleeps until the next deadline or until woken (an attempt ended, a progress
report, ``Engine.wake()``).

Invariants:

* An attempt runs only while this worker holds its lease. A renewal that finds a lease lost (it
  expired and another worker claimed the job) cancels the attempt, which then writes nothing.
* Outcomes are compare-and-sets fenced by (job, attempt, owner): a job completes once, and a job
  whose cancel was requested ends ``cancelled`` however its handler ended.
* An attempt is bounded by its ``timeout_seconds`` (then ``failed``, ``timeout``) and, once a
  cancel was requested, by one more lease period (then cancelled by force, ``cancelled``).
* A worker never claims a job it is already running. Outcomes not yet written survive a failed
  round (they are written by the next one).
* Graceful stop (:meth:`Workers.drain`): no more claims; running attempts get
  ``WORKER_SHUTDOWN_GRACE_SECONDS`` to end; the rest are cancelled and their jobs released — due
  again at once on any instance, the interrupted attempt not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from longops.domain.clock import Clock, system_clock
from longops.domain.statuses import StopReason
from longops.engine.backoff import RETRY_CAP_SECONDS, exponential
from longops.engine.ingest import INGEST_JOB_TYPE, INGEST_OPTIONS, BatchIngest
from longops.handlers import (
    AttemptState,
    Cancelled,
    Handler,
    HandlerOptions,
    JobContext,
    PermanentError,
    registered_handlers,
)
from longops.providers.registry import ProviderSpec
from longops.settings import Settings
from longops.store import job_queue as queue
from longops.store.db import Database

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 0.5
MAX_ERROR_MESSAGE_CHARS = 2000


def job_types() -> dict[str, HandlerOptions]:
    """Every job type ``POST /v1/jobs`` accepts in this process, with its options."""
    return {INGEST_JOB_TYPE: INGEST_OPTIONS} | {
        name: registered.options for name, registered in registered_handlers().items()
    }


def bound_handlers(
    db: Database, settings: Settings, providers: Mapping[str, ProviderSpec]
) -> dict[str, Handler]:
    """The registered handlers plus the built-in ones, bound to this engine."""
    ingest = Handler(INGEST_JOB_TYPE, BatchIngest(db, settings, providers), INGEST_OPTIONS)
    return {INGEST_JOB_TYPE: ingest} | registered_handlers()


@dataclass
class _Attempt:
    claimed: queue.Claimed
    handler: Handler
    ctx: JobContext
    task: asyncio.Task[queue.Outcome | None] | None = None
    cancel_seen_at: float | None = None  # loop time the cancel request was first seen
    interrupt: queue.OutcomeKind | None = None  # why this worker cancelled the task (None: lease lost)
    interrupted: bool = False

    @property
    def held(self) -> queue.Held:
        return queue.Held(self.claimed.id, self.claimed.attempt)

    def stop(self, why: queue.OutcomeKind | None) -> None:
        if not self.interrupted and self.task is not None:
            self.interrupted, self.interrupt = True, why
            self.task.cancel()


def _error(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc)[:MAX_ERROR_MESSAGE_CHARS]}


class Workers:
    name = "workers"

    def __init__(
        self,
        db: Database,
        settings: Settings,
        handlers: Mapping[str, Handler],
        owner: str,
        *,
        clock: Clock = system_clock,
    ) -> None:
        """``clock`` dates claims, leases, progress, outcomes and retries (the system's by default);
        when the next round runs is the event loop's business (its monotonic time)."""
        self._db = db
        self._clock = clock
        self._settings = settings
        self._handlers = dict(handlers)
        self._limits = {name: h.options.concurrency for name, h in self._handlers.items()}
        self._owner = owner
        self._lease = timedelta(seconds=settings.job_lease_seconds)
        self._running: dict[str, _Attempt] = {}
        self._ended: list[queue.Outcome] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._draining = False
        self._want_claim = True
        self._next_claim = self._next_heartbeat = self._next_progress = self._next_reap = 0.0

    def wake(self) -> None:
        """Look for due jobs now (a job was just created)."""
        self._want_claim = True
        self._wake.set()

    async def run_once(self) -> float:
        async with self._lock:
            await self._round()
        if self._draining and not self._running and not self._ended:
            return self._settings.worker_poll_seconds  # drained: the runner's own sleep ends at its stop()
        delay = self._next_deadline() - asyncio.get_running_loop().time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
        self._wake.clear()
        return 0.0

    async def drain(self, grace: float) -> None:
        """Stop claiming; give running attempts ``grace`` seconds, then cancel and release the rest."""
        self._draining = True
        self._wake.set()
        attempts = list(self._running.values())
        pending = [a.task for a in attempts if a.task is not None]
        if pending:
            log.info("waiting up to %.1fs for %d running job(s) to end", grace, len(pending))
            await asyncio.wait(pending, timeout=grace)
        for attempt in list(self._running.values()):
            log.warning(
                "releasing job %s (attempt %d): shutting down", attempt.claimed.id, attempt.claimed.attempt
            )
            attempt.stop(queue.OutcomeKind.RELEASED)
        await asyncio.gather(*pending, return_exceptions=True)
        async with self._lock:
            await self._write_outcomes()

    # -- one round ------------------------------------------------------------------------------

    async def _round(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._running and now >= self._next_heartbeat:
            await self._heartbeat()
            self._next_heartbeat = now + self._lease.total_seconds() / 3
        if self._dirty() and now >= self._next_progress:
            await self._write_progress()
            self._next_progress = now + PROGRESS_SECONDS
        free = self._free()
        claim = free > 0 and (self._want_claim or now >= self._next_claim or bool(self._ended))
        if self._ended or claim:
            self._want_claim = False
            claimed = await self._write_outcomes(claim_slots=free if claim else 0)
            if claim:
                self._next_claim = now + self._settings.worker_poll_seconds
                self._want_claim = len(claimed) == free  # every slot filled: more may be due
        if now >= self._next_reap:
            async with self._db.write() as conn:
                reaped = await queue.reap(conn, self._clock())
            if any(reaped.values()):
                log.info("reaped jobs no worker will run: %s", reaped)
            self._next_reap = now + self._lease.total_seconds() / 3

    def _next_deadline(self) -> float:
        if self._ended or (self._want_claim and self._free() > 0):
            return 0.0
        deadlines = [self._next_reap]
        if not self._draining:
            deadlines.append(self._next_claim)
        if self._running:
            deadlines.append(self._next_heartbeat)
        if self._dirty():
            deadlines.append(self._next_progress)
        return min(deadlines)

    def _free(self) -> int:
        return 0 if self._draining else self._settings.worker_concurrency - len(self._running)

    def _dirty(self) -> bool:
        return any(a.ctx.state.progress_dirty for a in self._running.values())

    async def _write_outcomes(self, claim_slots: int = 0) -> list[queue.Claimed]:
        """Write the ended attempts' outcomes and claim up to ``claim_slots`` jobs, in one transaction."""
        outcomes, self._ended = self._ended, []
        try:
            async with self._db.write() as conn:
                now = self._clock()
                written = await queue.record_outcomes(conn, self._owner, outcomes, now) if outcomes else {}
                claimed = []
                if claim_slots > 0:
                    claimed = await queue.claim_jobs(
                        conn,
                        owner=self._owner,
                        now=now,
                        lease=self._lease,
                        slots=claim_slots,
                        limits=self._limits,
                        exclude=list(self._running),
                    )
        except BaseException:
            self._ended = outcomes + self._ended
            raise
        for outcome in outcomes:
            became = written.get(outcome.held.id)
            if became is None:
                log.warning(
                    "job %s attempt %d: lease lost; outcome dropped", outcome.held.id, outcome.held.attempt
                )
            else:
                log.debug("job %s attempt %d: %s", outcome.held.id, outcome.held.attempt, became)
        for job in claimed:
            self._start(job)
        return claimed

    async def _heartbeat(self) -> None:
        attempts = [a for a in self._running.values() if not a.interrupted]
        async with self._db.write() as conn:
            held = await queue.renew_leases(
                conn, self._owner, [a.held for a in attempts], self._clock(), self._lease
            )
        for attempt in attempts:
            if attempt.claimed.id not in held:
                log.warning(
                    "job %s attempt %d: lease lost (expired and claimed elsewhere); stopping it here",
                    attempt.claimed.id,
                    attempt.claimed.attempt,
                )
                attempt.stop(None)
        self._note_cancels(attempts, held)

    def _note_cancels(self, attempts: list[_Attempt], cancel_requested: Mapping[str, bool]) -> None:
        """Tell handlers whose job was asked to cancel; cancel those that ignored it for a lease period."""
        now = asyncio.get_running_loop().time()
        for attempt in attempts:
            if not cancel_requested.get(attempt.claimed.id):
                continue
            attempt.ctx.state.cancel_requested = True
            if attempt.cancel_seen_at is None:
                attempt.cancel_seen_at = now
            elif now - attempt.cancel_seen_at >= self._lease.total_seconds():
                log.warning(
                    "job %s ignored its cancellation for a lease period: cancelling it", attempt.claimed.id
                )
                attempt.stop(queue.OutcomeKind.CANCELLED)

    async def _write_progress(self) -> None:
        dirty = [a for a in self._running.values() if a.ctx.state.progress_dirty and a.ctx.state.progress]
        versions = {a.claimed.id: a.ctx.state.progress_version for a in dirty}
        reports = {a.held: dict(a.ctx.state.progress or {}) for a in dirty}
        async with self._db.write() as conn:
            cancel_requested = await queue.write_progress(conn, self._owner, reports, self._clock())
        for attempt in dirty:
            if attempt.ctx.state.progress_version == versions[attempt.claimed.id]:
                attempt.ctx.state.progress_dirty = False
        self._note_cancels(dirty, cancel_requested)

    # -- one attempt ----------------------------------------------------------------------------

    def _start(self, job: queue.Claimed) -> None:
        handler = self._handlers[job.job_type]
        state = AttemptState(notify=self._wake.set)
        ctx = JobContext(
            job_id=job.id,
            job_type=job.job_type,
            org_id=job.org_id,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            state=state,
        )
        attempt = _Attempt(job, handler, ctx)
        attempt.task = asyncio.create_task(self._run(attempt), name=f"longops-job-{job.id}")
        attempt.task.add_done_callback(lambda _task: self._ended_attempt(attempt))
        self._running[job.id] = attempt

    def _ended_attempt(self, attempt: _Attempt) -> None:
        self._running.pop(attempt.claimed.id, None)
        task = attempt.task
        assert task is not None
        if task.cancelled():
            pass
        elif (exc := task.exception()) is not None:
            log.error("job %s: its attempt ended abnormally", attempt.claimed.id, exc_info=exc)
        elif (outcome := task.result()) is not None:
            self._ended.append(outcome)
        self._wake.set()

    async def _run(self, attempt: _Attempt) -> queue.Outcome | None:
        job = attempt.claimed
        timeout = job.timeout_seconds or attempt.handler.options.timeout_seconds
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                value = await attempt.handler.fn(attempt.ctx, job.input)
        except asyncio.CancelledError:
            if not attempt.interrupted:
                raise  # not ours (the process is shutting down hard)
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if attempt.interrupt is None:
                return None  # lease lost: the attempt that holds the job now decides
            return self._outcome(attempt, attempt.interrupt)
        except TimeoutError as exc:
            if not deadline.expired():
                return self._failure(attempt, exc)
            message = f"attempt {job.attempt} ran longer than its timeout ({timeout:g} s)"
            return self._outcome(
                attempt,
                queue.OutcomeKind.FAILED,
                error={"type": "timeout", "message": message},
                stop_reason=StopReason.TIMEOUT,
            )
        except Cancelled:
            return self._outcome(attempt, queue.OutcomeKind.CANCELLED)
        except PermanentError as exc:
            error = {"type": exc.error_type, "message": exc.message[:MAX_ERROR_MESSAGE_CHARS]}
            return self._outcome(
                attempt, queue.OutcomeKind.FAILED, error=error, stop_reason=StopReason.HANDLER_ERROR
            )
        except Exception as exc:
            return self._failure(attempt, exc)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            error = {"type": "invalid_result", "message": f"the handler's result is not JSON: {exc}"}
            return self._outcome(
                attempt, queue.OutcomeKind.FAILED, error=error, stop_reason=StopReason.HANDLER_ERROR
            )
        return self._outcome(attempt, queue.OutcomeKind.COMPLETED, result=value)

    def _failure(self, attempt: _Attempt, exc: Exception) -> queue.Outcome:
        job = attempt.claimed
        log.warning(
            "job %s (%s) attempt %d/%d failed",
            job.id,
            job.job_type,
            job.attempt,
            job.max_attempts,
            exc_info=exc,
        )
        if job.attempt < job.max_attempts:
            delay = exponential(
                job.attempt, base=self._settings.job_retry_backoff_seconds, cap=RETRY_CAP_SECONDS
            )
            return self._outcome(
                attempt,
                queue.OutcomeKind.RETRY,
                error=_error(exc),
                retry_at=self._clock() + timedelta(seconds=delay),
            )
        return self._outcome(
            attempt, queue.OutcomeKind.FAILED, error=_error(exc), stop_reason=StopReason.HANDLER_ERROR
        )

    def _outcome(self, attempt: _Attempt, kind: queue.OutcomeKind, **fields: Any) -> queue.Outcome:
        state = attempt.ctx.state
        progress = dict(state.progress) if state.progress_dirty and state.progress else None
        return queue.Outcome(attempt.held, kind, progress=progress, **fields)
