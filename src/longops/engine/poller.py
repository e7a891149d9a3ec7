"""Poller (leader only): asks providers about running batches and ingests the results of ended ones.

Invariants:

* Every running provider batch is due again at some point: a success schedules the next poll at the
  interval plus jitter, a provider error or timeout at an exponential backoff. Nothing is dropped.
* Only the provider's ``ended`` (or ``failed``) ends a provider batch; intermediate states such as
  ``canceling`` keep it running.
* Results are streamed and written in chunks, each chunk its own transaction and idempotent, and only
  when the whole stream has been read is the provider batch marked completed (in the transaction of
  the last chunk). A stream cut midway leaves it running; the next cycle streams again and writes
  only what is still missing.
* Usage is counted from what each write changed, never from the lines read: the job's usage sums
  in the write's own transaction (:mod:`longops.store.usage`), the Prometheus counters once it has
  committed (:mod:`.usage_meter`). A stream read again counts nothing twice.
* The last chunks of the batches that end in one cycle are written and completed together
  (:mod:`longops.store.completion`): a transaction of a constant number of statements per
  ``INGEST_CHUNK_SIZE`` results, not per batch, so a thousand small batches cost about as much as
  one batch of the same items. When a group transaction fails, its batches are completed one by
  one, so a batch whose results the database refuses (a poison batch) does not hold back the rest.
* A cancel the provider refuses is answered by a retrieve (:meth:`Poller._ask`): a batch the
  provider says has ended is ingested like any other, never polled with the cancel forever.
* The results of an ended batch (and a batch the provider answers 404 for) are tried at most
  ``RESULTS_MAX_ATTEMPTS`` times in a row, at a backoff; then the provider batch ends and its items
  without a result are errored ``results_unavailable``. A results line that cannot be read never
  breaks the stream (see :mod:`longops.providers.base`).
* A batch whose results cannot be written stays running and is retried at a backoff, like a
  provider error, with ``error.type`` ``ingest_failed`` (the chunks already written stay: the
  retry writes only what is missing). A failure that says nothing about the batches (the database
  out of reach, leadership lost: :func:`_independent_of_batches`) is raised instead, after the
  cycle's bookkeeping, and leaves the batches it hit due again at once.
* Reading overlaps writing: while one chunk is written, the next is read and parsed. Chunks are
  still written one at a time and in stream order, and memory stays bounded: per ingesting batch,
  the chunk being written, at most ``_READ_AHEAD`` chunks waiting and the one being read, each at
  most ``INGEST_CHUNK_SIZE`` results and about ``_CHUNK_BYTES`` of response text.
* What the provider still keeps of a batch that ended (its input and result files) is released
  (:meth:`Provider.release`) only after its results are committed. The releases of one cycle run
  in the background while the next cycle polls (at most ``POLL_CONCURRENCY`` calls at once, and
  at most one cycle's releases in flight: a cycle that ends while the previous releases still run
  waits for them). A release that fails, or is cut short by a stop, is logged and not retried
  (the provider's own expiry removes the rest).
* One cycle costs a constant number of statements for the batches that did not end: one query for
  the due batches and one executemany for their bookkeeping (plus the leader's fence, once per write
  transaction).
* Memory stays bounded with the groups too: a group is handed to its write as soon as it holds
  ``INGEST_CHUNK_SIZE`` results or ``_CHUNK_BYTES`` of response text, at most
  ``_WRITES_IN_FLIGHT`` groups are written at once, and a poll that fills a group beyond that waits
  for the oldest write.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import RowMapping
from sqlalchemy.exc import DBAPIError

from longops.domain.prices import PriceTable
from longops.domain.provider_status import ProviderPhase
from longops.domain.results import ProviderResult, UnreadableLine
from longops.domain.statuses import ItemStatus
from longops.engine.backoff import exponential, with_jitter
from longops.engine.metrics import Metrics
from longops.engine.usage_meter import UsageMeter
from longops.pricing import load_price_table
from longops.providers.base import (
    Provider,
    ProviderBatchInfo,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
)
from longops.providers.registry import ProviderRegistry
from longops.settings import Settings
from longops.store import provider_batches as pbs
from longops.store.completion import EndedBatch, complete_ended_batches
from longops.store.db import Database, defer_commit_flush
from longops.store.items import ItemSpan, close_items, ingest_results
from longops.store.storage import is_database_unavailable, is_storage_full
from longops.store.terms import Deposed
from longops.store.transitions import finalize_batch_if_done
from longops.store.types import utcnow

log = logging.getLogger(__name__)

# Results read ahead of the chunk being written, and the response text a chunk may hold (a chunk is
# cut at INGEST_CHUNK_SIZE results or at this many characters, whichever comes first).
_READ_AHEAD = 1
_CHUNK_BYTES = 8 * 1024 * 1024
# Groups of ended batches written at once (see _Completions).
_WRITES_IN_FLIGHT = 2


@dataclass
class CycleStats:
    polled: int = 0
    ended: int = 0
    still_running: int = 0
    errors: int = 0
    items_ingested: int = 0


class Poller:
    name = "poller"

    def __init__(
        self,
        db: Database,
        providers: ProviderRegistry,
        settings: Settings,
        metrics: Metrics,
        prices: PriceTable | None = None,
    ) -> None:
        self._db = db
        self._providers = providers
        self._settings = settings
        self._metrics = metrics
        self._releases: asyncio.Task[None] | None = None  # the last cycle's releases
        self._meter = UsageMeter(metrics, prices if prices is not None else load_price_table(settings))

    async def run_once(self) -> float:
        started = time.perf_counter()
        now = utcnow()
        due = await pbs.due_polls(self._db, now, self._settings.poll_batch_size)
        stats = CycleStats()
        gate = asyncio.Semaphore(self._settings.poll_concurrency)
        completions = _Completions(self._db, self._settings.ingest_chunk_size, stats, self._meter)
        ended: dict[str, tuple[Provider, ProviderBatchInfo]] = {}

        async def poll(pb: RowMapping) -> pbs.PollRecord | None:
            async with gate:
                return await self._poll_one(pb, stats, completions, ended)

        # Every poll runs to its end even if one fails, so nothing is left running into the next
        # cycle; what ended is written and what was polled recorded, then a failure that is not a
        # batch's own is raised.
        outcomes = await asyncio.gather(*(poll(pb) for pb in due), return_exceptions=True)
        records: list[pbs.PollRecord] = []
        failed_writes: list[tuple[RowMapping, Exception]] = []
        failures: list[BaseException] = []
        for pb, outcome in zip(due, outcomes, strict=True):
            if isinstance(outcome, pbs.PollRecord):
                records.append(outcome)
            elif isinstance(outcome, Exception) and not _independent_of_batches(outcome):
                failed_writes.append((pb, outcome))
            elif isinstance(outcome, BaseException):
                failures.append(outcome)
        try:
            due_by_id = {pb["id"]: pb for pb in due}
            failed_writes += [(due_by_id[ended.pb_id], exc) for ended, exc in await completions.flush()]
        except Exception as exc:
            failures.append(exc)
        records += [self._failed_write(pb, exc, stats) for pb, exc in failed_writes]
        await pbs.record_polls(self._db, records, utcnow())
        for pb, _ in failed_writes:
            ended.pop(pb["id"], None)
        if not failures and ended:
            await self._release_in_background(list(ended.values()))
        if failures:
            raise failures[0]
        elapsed = time.perf_counter() - started
        self._record(stats, elapsed)
        if len(due) == self._settings.poll_batch_size:
            return 0.0  # more are due: keep going
        return min(1.0, self._settings.poll_interval_seconds, self._settings.simulator_poll_interval_seconds)

    async def _release_in_background(self, ended: list[tuple[Provider, ProviderBatchInfo]]) -> None:
        if self._releases is not None and not self._releases.done():
            await self._releases  # bounded: one cycle's releases at a time
        gate = asyncio.Semaphore(self._settings.poll_concurrency)

        async def release(provider: Provider, info: ProviderBatchInfo) -> None:
            async with gate:
                await _release(provider, info)

        async def release_all() -> None:
            await asyncio.gather(*(release(provider, info) for provider, info in ended))

        self._releases = asyncio.create_task(release_all(), name="longops-release")

    def _record(self, stats: CycleStats, elapsed: float) -> None:
        m = self._metrics
        m.poll_cycles.inc()
        m.polled.inc(stats.polled)
        m.ended.inc(stats.ended)
        m.poll_errors.inc(stats.errors)
        m.items_ingested.inc(stats.items_ingested)
        m.still_running.set(stats.still_running)
        m.poll_duration.observe(elapsed)
        if stats.polled:
            log.info(
                "poll cycle: polled=%d ended=%d running=%d errors=%d items=%d duration=%.3fs",
                stats.polled,
                stats.ended,
                stats.still_running,
                stats.errors,
                stats.items_ingested,
                elapsed,
            )

    async def _poll_one(
        self,
        pb: RowMapping,
        stats: CycleStats,
        completions: _Completions,
        ended: dict[str, tuple[Provider, ProviderBatchInfo]],
    ) -> pbs.PollRecord | None:
        provider = self._providers.get(pb["provider"])
        if provider is None:
            log.warning("provider %r of %s is not configured here; will retry", pb["provider"], pb["id"])
            return self._failed_poll(pb, {"type": "provider_not_configured", "message": pb["provider"]})
        stats.polled += 1
        try:
            info, cancel_sent = await self._ask(provider, pb)
        except ProviderError as exc:
            # A provider that does not know the batch (404) will not know it later either.
            return await self._poll_failed(pb, exc, stats, bounded=isinstance(exc, ProviderNotFound))
        if info.phase == ProviderPhase.RUNNING:
            stats.still_running += 1
            return self._running(pb, info, cancel_sent=cancel_sent)
        if info.phase == ProviderPhase.FAILED:
            await self._end_with_error(
                pb,
                {
                    "type": "provider_error",
                    "message": info.error or f"provider batch {info.processing_status}",
                },
            )
        else:
            try:
                written = await self._ingest(provider, pb, info, completions)
            except ProviderError as exc:  # the batch has ended: its results are what is missing
                return await self._poll_failed(pb, exc, stats, bounded=True)
            stats.items_ingested += written  # after the await: other polls add meanwhile
        ended[pb["id"]] = (provider, info)
        stats.ended += 1
        return None

    async def _ask(self, provider: Provider, pb: RowMapping) -> tuple[ProviderBatchInfo, bool]:
        """The provider's word on the batch, sending the cancel first when one is pending.
        Returns it and whether the cancel has now been dealt with.

        A cancel the provider refuses (Anthropic answers 400 once a batch "has ended; it cannot be
        canceled") is answered by a retrieve: the provider is authoritative, so an ended batch is
        ingested like any other, and one still running is polled on to its end, the cancel not sent
        again."""
        if pb["cancel_requested_at"] is None or pb["cancel_sent_at"] is not None:
            return await provider.retrieve(pb["provider_batch_id"]), False
        try:
            return await provider.cancel(pb["provider_batch_id"]), True
        except ProviderRejected as exc:
            if isinstance(exc, ProviderNotFound):
                raise
            info = await provider.retrieve(pb["provider_batch_id"])
            log.warning(
                "the cancel of %s (%s) was refused (%s); the provider says it is %s",
                pb["id"],
                pb["provider_batch_id"],
                exc.message,
                info.processing_status,
            )
            return info, True

    async def _poll_failed(
        self, pb: RowMapping, exc: ProviderError, stats: CycleStats, *, bounded: bool
    ) -> pbs.PollRecord | None:
        """A provider error: retried at a backoff. When ``bounded`` (the results of an ended batch,
        or a batch the provider does not know), at most ``RESULTS_MAX_ATTEMPTS`` times in a row;
        then the provider batch ends and its items without a result are errored, saying why."""
        stats.errors += 1
        log.warning("poll of %s (%s) failed: %s", pb["id"], pb["provider_batch_id"], exc.message)
        attempts = int(pb["poll_errors"]) + 1
        if bounded and attempts >= self._settings.results_max_attempts:
            log.error(
                "giving up on the results of %s (%s) after %d attempts",
                pb["id"],
                pb["provider_batch_id"],
                attempts,
            )
            await self._end_with_error(
                pb,
                {
                    "type": "results_unavailable",
                    "message": (
                        f"the results of provider batch {pb['provider_batch_id']} could not be read after "
                        f"{attempts} attempts (RESULTS_MAX_ATTEMPTS); "
                        f"last error: {exc.error_type}: {exc.message}"
                    ),
                },
            )
            stats.ended += 1
            return None
        return self._failed_poll(pb, {"type": exc.error_type, "message": exc.message})

    def _running(self, pb: RowMapping, info: ProviderBatchInfo, *, cancel_sent: bool) -> pbs.PollRecord:
        delay = with_jitter(
            self._settings.poll_interval_for(pb["provider"]), self._settings.poll_jitter_for(pb["provider"])
        )
        return pbs.PollRecord(
            pb_id=pb["id"],
            processing_status=info.processing_status,
            next_poll_at=utcnow() + timedelta(seconds=delay),
            poll_errors=0,
            error=None,
            cancel_sent=cancel_sent,
        )

    def _failed_poll(self, pb: RowMapping, error: dict[str, Any]) -> pbs.PollRecord:
        errors = int(pb["poll_errors"]) + 1
        delay = exponential(
            errors,
            base=self._settings.poll_interval_for(pb["provider"]),
            cap=self._settings.poll_max_backoff_seconds,
        )
        return pbs.PollRecord(
            pb_id=pb["id"],
            processing_status=None,
            next_poll_at=utcnow() + timedelta(seconds=delay),
            poll_errors=errors,
            error=error,
        )

    def _unreadable(self, pb: RowMapping, line: UnreadableLine) -> None:
        """A results line naming no item: counted and logged (the item it was meant for, if any,
        ends ``missing_result`` when the batch completes)."""
        self._metrics.unreadable_result_lines.inc()
        log.warning(
            "an unreadable results line of %s (%s) was skipped: %s",
            pb["id"],
            pb["provider_batch_id"],
            line.reason,
        )

    def _failed_write(self, pb: RowMapping, exc: Exception, stats: CycleStats) -> pbs.PollRecord:
        """A batch whose results could not be ingested: retried at a backoff, as a failed poll."""
        stats.errors += 1
        log.error(
            "ingesting the results of %s (%s) failed; it stays running and is retried at a backoff",
            pb["id"],
            pb["provider_batch_id"],
            exc_info=exc,
        )
        # Shown to the batch's owner: the exception's text may quote other batches' results.
        message = f"ingesting the results failed ({type(exc).__name__}); see the engine's log"
        return self._failed_poll(pb, {"type": "ingest_failed", "message": message})

    async def _ingest(
        self, provider: Provider, pb: RowMapping, info: ProviderBatchInfo, completions: _Completions
    ) -> int:
        """Stream every result into items and hand the last chunk to ``completions``, which
        completes the provider batch. Returns the items written here (the last chunk's are counted
        when its group is written).

        A reader task fills a queue of at most ``_READ_AHEAD`` chunks while this task writes them in
        order. A broken stream reaches this task through the queue, after the chunks read before it.
        """
        queue: asyncio.Queue[_Chunk | BaseException] = asyncio.Queue(maxsize=_READ_AHEAD)
        reader = asyncio.create_task(self._read(provider, pb, info, queue))
        written = 0
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.last:
                    ended = EndedBatch(
                        pb["id"], pb["job_id"], info.processing_status, item.results, pb["provider"]
                    )
                    await completions.add(ended)
                    return written
                written += await self._write_chunk(pb, item.results)
        finally:
            if not reader.done():
                reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(
        self,
        provider: Provider,
        pb: RowMapping,
        info: ProviderBatchInfo,
        queue: asyncio.Queue[_Chunk | BaseException],
    ) -> None:
        max_items = self._settings.ingest_chunk_size
        chunk: list[ProviderResult] = []
        size = 0
        stream = provider.results(info)
        try:
            async for result in stream:
                if isinstance(result, UnreadableLine):
                    self._unreadable(pb, result)
                    continue
                # A full chunk is handed over once the next result shows it is not the last one,
                # so the last chunk is never empty: it is written with the completion.
                if len(chunk) >= max_items or size >= _CHUNK_BYTES:
                    await queue.put(_Chunk(chunk, last=False))
                    chunk, size = [], 0
                chunk.append(result)
                size += _result_size(result)
        except Exception as exc:  # a broken stream: the writer raises it after the chunks before it
            await queue.put(exc)
            return
        finally:
            aclose = getattr(stream, "aclose", None)  # an async generator: close the connection now
            if aclose is not None:
                await aclose()
        await queue.put(_Chunk(chunk, last=True))

    async def _write_chunk(self, pb: RowMapping, chunk: list[ProviderResult]) -> int:
        """One intermediate chunk. Its commit does not wait for the disk: a chunk lost in a database
        crash is read and written again, since its provider batch is not completed before the
        synchronous transaction that completes it (``complete_ended_batches``), which makes every
        chunk before it durable."""
        async with self._db.write() as conn:
            await defer_commit_flush(conn)
            written = await ingest_results(conn, pb["job_id"], chunk, utcnow())
        self._meter.record(written, {pb["job_id"]: pb["provider"]})
        return written.total

    async def _end_with_error(self, pb: RowMapping, error: dict[str, Any]) -> None:
        """End the provider batch failed, its items still open errored with ``error``, and
        finalize the batch if that was its last provider batch (one transaction)."""
        now = utcnow()
        async with self._db.write() as conn:
            if await pbs.fail_provider_batch(conn, pb["id"], error, now):
                await close_items(
                    conn, pb["job_id"], to=ItemStatus.ERRORED, error=error, now=now, span=ItemSpan.of(pb)
                )
                await finalize_batch_if_done(conn, pb["job_id"], now)


async def _release(provider: Provider, info: ProviderBatchInfo) -> None:
    try:
        await provider.release(info)
    except ProviderError as exc:
        log.warning("could not release %s at %s: %s", info.provider_batch_id, provider.name, exc.message)
    except Exception as exc:  # e.g. the provider's client closed by a stop: never retried anyway
        log.warning("could not release %s at %s: %r", info.provider_batch_id, provider.name, exc)


def _independent_of_batches(exc: BaseException) -> bool:
    """Whether a failed write says nothing about the batches it held: the database out of reach,
    busy or out of space, or this instance no longer the leader. Writing them one by one would fail
    alike (and the loop's own backoff spaces the retries)."""
    if is_storage_full(exc) or is_database_unavailable(exc):
        return True
    if isinstance(exc, DBAPIError):
        return False  # the statement itself failed: a poison batch, written alone to find it
    return isinstance(exc, (Deposed, OSError, TimeoutError))


def _result_size(result: ProviderResult) -> int:
    """What a result weighs toward a chunk's ``_CHUNK_BYTES`` (its response text, or a small error)."""
    return len(result.response_json) if result.response_json is not None else 100


@dataclass(frozen=True, slots=True)
class _Chunk:
    results: list[ProviderResult]
    last: bool  # the stream has ended after these


class _Completions:
    """The ended batches of one poll cycle, completed together (see the module docstring).

    A full group is written in a background task while the next one fills, so the polls that end
    meanwhile keep reading instead of waiting for the database. Up to ``_WRITES_IN_FLIGHT`` groups
    are written at once (they hold different batches; each transaction locks its job rows in id
    order, so two of them cannot deadlock); a hand-over beyond that waits for the oldest write.
    :meth:`flush` writes the rest and waits for every write, at the end of the cycle.

    A group whose transaction fails is written again one batch per transaction; :meth:`flush`
    returns the batches that failed alone. A failure independent of the batches is raised there
    (or at a hand-over) instead, and leaves the batches of its group running, to be polled again.
    """

    def __init__(self, db: Database, max_results: int, stats: CycleStats, meter: UsageMeter) -> None:
        self._db = db
        self._max_results = max_results
        self._stats = stats
        self._meter = meter
        self._lock = asyncio.Lock()
        self._pending: list[EndedBatch] = []
        self._results = 0
        self._bytes = 0
        self._writing: collections.deque[asyncio.Task[None]] = collections.deque()
        self._failed: list[tuple[EndedBatch, Exception]] = []

    async def add(self, ended: EndedBatch) -> None:
        # Under the lock: while a hand-over waits for a write slot, no group grows past its size.
        async with self._lock:
            self._pending.append(ended)
            self._results += len(ended.last_results)
            self._bytes += sum(_result_size(r) for r in ended.last_results)
            if self._results >= self._max_results or self._bytes >= _CHUNK_BYTES:
                await self._hand_over()

    async def flush(self) -> list[tuple[EndedBatch, Exception]]:
        """Write what is pending and wait for every write; the batches that failed alone, and why."""
        async with self._lock:
            try:
                await self._hand_over()
            finally:
                writing, self._writing = list(self._writing), collections.deque()
                outcomes = await asyncio.gather(*writing, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            return self._failed

    async def _hand_over(self) -> None:
        """Start writing the pending group, once a write slot is free (the lock is held)."""
        if not self._pending:
            return
        group, self._pending, self._results, self._bytes = self._pending, [], 0, 0
        while len(self._writing) >= _WRITES_IN_FLIGHT:
            await self._writing.popleft()
        self._writing.append(asyncio.create_task(self._write(group)))

    async def _write(self, group: list[EndedBatch]) -> None:
        if len(group) > 1:
            try:
                await self._complete(group)
                return
            except Exception as exc:
                if _independent_of_batches(exc):
                    raise
                # The class only: the batch that fails alone is logged with the whole exception.
                name = type(exc).__name__
                log.warning("completing %d ended batches together failed (%s); one by one", len(group), name)
        for ended in group:
            try:
                await self._complete([ended])
            except Exception as exc:
                if _independent_of_batches(exc):
                    raise
                self._failed.append((ended, exc))

    async def _complete(self, group: list[EndedBatch]) -> None:
        async with self._db.write() as conn:
            written = await complete_ended_batches(conn, group, utcnow())
        self._stats.items_ingested += written.total
        self._meter.record(written, {ended.job_id: ended.provider for ended in group})
