"""The emulated batch sender (every instance): longops sends each item itself as a live request.

One :class:`EmulatedSender` per provider whose batch is ``emulated`` (protocol
``openai_compatible``), on every instance, leader or not. A round, in order:

1. at most every ``WORKER_POLL_SECONDS`` (or at once when woken: a batch was created): start the
   created batches of this provider (:func:`~longops.store.emulated.plan`, a compare-and-set, so
   one instance wins each), and close the unsent items of cancelled ones;
2. write the outcomes that have come back, in one transaction per chunk (at most
   :data:`FLUSH_ITEMS` outcomes, or what came back within :data:`FLUSH_SECONDS`);
3. claim due items for the free room (``FOR UPDATE SKIP LOCKED``), leased for twice the request
   timeout plus a second, from the cursor of the last claim (reset at every scan), and start one
   task per item.

Invariants:

* At most ``concurrency`` requests are in flight from this instance (a semaphore around each
  send); at most ``4 × concurrency + 2 × FLUSH_ITEMS`` items are held (claimed and not yet
  written), so memory is flat whatever the batch size. One chunk is written at a time, beside the
  sending and claiming.
* An item is final once its outcome is committed; a final item is never claimed again, so never
  sent again. An item in flight when its instance dies (or whose answer had arrived but was not yet
  written) comes back when its lease ends and is sent again: at least once.
* 429, 5xx and connection errors are retried, up to ``max_attempts`` sends of the item, after the
  server's ``Retry-After`` when it gives one and an exponential backoff otherwise; the item waits in
  the database (pending, due later), not here, so any instance may send it. Other 4xx are final.
* Cancel: a cancelled batch is not claimed from again; items of it held here and not yet sent end
  ``cancelled`` without being sent; items in flight end with their answer.
* Graceful stop (:meth:`drain`): no more claims; requests in flight get
  ``WORKER_SHUTDOWN_GRACE_SECONDS``, then what came back is written; the rest come back by lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from longops.domain.results import ProviderResult
from longops.domain.statuses import ItemStatus
from longops.engine.backoff import exponential
from longops.providers.openai_compatible import LiveAnswer, LiveClient
from longops.providers.registry import ProviderSpec
from longops.settings import Settings
from longops.store import emulated as store
from longops.store.db import Database
from longops.store.jobs import CANCELLED_ERROR
from longops.store.provider_batches import batches_to_plan
from longops.store.types import utcnow

log = logging.getLogger(__name__)

FLUSH_ITEMS = 256
FLUSH_SECONDS = 0.2
RETRY_BASE_SECONDS = 1.0
RETRY_CAP_SECONDS = 60.0  # without Retry-After
RETRY_AFTER_CAP_SECONDS = 3600.0
PLAN_PER_ROUND = 20


class EmulatedSender:
    def __init__(self, db: Database, settings: Settings, spec: ProviderSpec) -> None:
        assert spec.base_url is not None
        self.name = f"emulated-{spec.name}"
        self._db = db
        self._settings = settings
        self._provider = spec.name
        self._concurrency = spec.concurrency or settings.openai_compatible_concurrency
        self._max_attempts = spec.max_attempts or settings.openai_compatible_max_attempts
        self._client = LiveClient(
            base_url=spec.base_url,
            api_key=spec.api_key,
            timeout=settings.provider_timeout_seconds,
            connections=self._concurrency,
        )
        self._lease = timedelta(seconds=2 * settings.provider_timeout_seconds + 1)
        self._gate = asyncio.Semaphore(self._concurrency)
        self._capacity = 4 * self._concurrency + 2 * FLUSH_ITEMS
        self._claim_min = self._concurrency  # claims in bulk: the held items keep the sending busy
        self._held = 0
        self._finals: list[store.Final] = []
        self._retries: list[store.Retry] = []
        self._first_outcome_at: float | None = None
        self._cancelled: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flushing: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._next_scan = 0.0
        self._more_due = True
        self._cursor: store.Cursor | None = None  # where the next claim starts (see claim_items)
        self._draining = False

    def wake(self) -> None:
        """Look for new batches and due items now (e.g. a batch was just created)."""
        self._next_scan = 0.0
        self._wake.set()

    async def run_once(self) -> float:
        clock = asyncio.get_running_loop().time
        if not self._draining and clock() >= self._next_scan:
            await self._scan()
            self._next_scan = clock() + self._settings.worker_poll_seconds
            self._more_due, self._cursor = True, None
        if (
            self._outcomes()
            and (self._flushing is None or self._flushing.done())
            and (self._outcomes() >= FLUSH_ITEMS or not self._tasks or clock() >= self._flush_deadline())
        ):
            # Written beside the sending and claiming (one write at a time): requests keep going
            # out while a chunk commits.
            self._flushing = asyncio.create_task(self._flush())
        room = self._capacity - self._held
        if not self._draining and self._more_due and room >= self._claim_min:
            now = utcnow()
            claimed, self._cursor = await store.claim_items(
                self._db, self._provider, now, now + self._lease, room, self._cursor
            )
            self._more_due = len(claimed) == room
            self._held += len(claimed)
            for item in claimed:
                task = asyncio.create_task(self._send(item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        deadlines = [self._next_scan]
        if self._outcomes() and (self._flushing is None or self._flushing.done()):
            deadlines.append(self._flush_deadline())
        if self._more_due and self._capacity - self._held >= self._claim_min:
            deadlines.append(0.0)
        delay = min(deadlines) - clock()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
        self._wake.clear()
        return 0.0

    async def drain(self, grace: float) -> None:
        """Stop claiming; give requests in flight ``grace`` seconds, write what came back, close."""
        self._draining = True
        self._wake.set()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._flushing is not None:
            await self._flushing
        if self._outcomes():
            await self._flush()
        await self._client.aclose()

    async def _scan(self) -> None:
        planned = await batches_to_plan(self._db, PLAN_PER_ROUND, only=[self._provider])
        for job_id, _provider in planned:
            pb_id = await store.plan(self._db, job_id, self._provider, utcnow())
            if pb_id is not None:
                log.info("batch %s: emulated provider batch %s started", job_id, pb_id)
        for job_id in await store.cancelled_batches(self._db, self._provider):
            self._cancelled.add(job_id)
            if await store.close_cancelled(self._db, job_id, utcnow()):
                self._cancelled.discard(job_id)
                log.info("batch %s: cancelled; its unsent items are cancelled", job_id)

    def _outcomes(self) -> int:
        return len(self._finals) + len(self._retries)

    def _flush_deadline(self) -> float:
        return (self._first_outcome_at or 0.0) + FLUSH_SECONDS

    async def _flush(self) -> None:
        """Write the outcomes that came back; on failure they stay to be written by a later flush."""
        finals, retries = self._finals, self._retries
        self._finals, self._retries, self._first_outcome_at = [], [], None
        try:
            done = await store.record_outcomes(self._db, finals, retries, utcnow())
        except Exception:
            log.exception("writing %d outcomes failed; retrying", len(finals) + len(retries))
            self._finals, self._retries = finals + self._finals, retries + self._retries
            self._first_outcome_at = asyncio.get_running_loop().time() + 1.0  # not at once
            return
        finally:
            self._wake.set()
        self._held -= len(finals) + len(retries)
        if retries:
            self._more_due = True
            earliest = min(r.due_at for r in retries) - utcnow()
            loop_at = asyncio.get_running_loop().time() + max(0.0, earliest.total_seconds())
            self._next_scan = min(self._next_scan, loop_at)
        for job_id in done:
            self._cancelled.discard(job_id)
            log.info("batch %s: every item is final", job_id)

    async def _send(self, item: store.ClaimedItem) -> None:
        async with self._gate:
            if item.job_id in self._cancelled:
                self._final(item, ItemStatus.CANCELLED, None, CANCELLED_ERROR)
                return
            answer = await self._client.send(item.endpoint, item.params, item.id)
        self._settle(item, answer)

    def _settle(self, item: store.ClaimedItem, answer: LiveAnswer) -> None:
        if answer.kind == "succeeded":
            self._final(item, ItemStatus.SUCCEEDED, answer.response_json, None, answer)
        elif answer.kind == "errored" or item.attempt >= self._max_attempts:
            self._final(item, ItemStatus.ERRORED, None, answer.error)
        else:
            delay = answer.retry_after
            if delay is None:
                delay = exponential(item.attempt, base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS)
            due_at = utcnow() + timedelta(seconds=min(delay, RETRY_AFTER_CAP_SECONDS))
            self._retries.append(store.Retry(item.id, item.attempt, due_at))
            self._noted()

    def _final(
        self,
        item: store.ClaimedItem,
        status: ItemStatus,
        response: str | None,
        error: dict[str, str] | None,
        answer: LiveAnswer | None = None,
    ) -> None:
        usage, model = (answer.usage, answer.model) if answer is not None else (None, None)
        result = ProviderResult(item.custom_id, status, response, error, usage, model)
        self._finals.append(store.Final(item.job_id, item.id, result))
        self._noted()

    def _noted(self) -> None:
        first = self._first_outcome_at is None
        if first:
            self._first_outcome_at = asyncio.get_running_loop().time()
        # The first outcome (the round then waits for its flush deadline), a full chunk, or the
        # last request of this instance back (the caller's task is still listed).
        if first or self._outcomes() >= FLUSH_ITEMS or len(self._tasks) <= 1:
            self._wake.set()
