"""Submitter (leader only): created batches → provider batches, never paying twice.

Invariants:

* A batch is planned (cut into provider batches within the provider's limits) in one transaction
  that claims it, so a concurrent cancel either wins before anything is planned or sees it claimed.
* The intent (``submit_started_at``) is committed before the provider is called, and the provider's
  batch id is stored in the same transaction that learns it.
* An answer proving nothing was created is retried with backoff; a definitive rejection fails the
  provider batch and errors its items; an unknown outcome (timeout, 5xx, reset, crash) is reconciled
  through the provider's list of batches before anything is sent again: one match is adopted, none
  is resubmitted, several fail the provider batch naming the candidates. A provider that tags its
  batches with our reference (:attr:`Provider.tags_batches`) is matched by that tag alone.
* What an adapter staged before its create call (an uploaded input file) is stored before the call
  is made; when reconciliation shows the batch was never created, it is discarded at the provider
  before anything is sent again.
* A batch whose provider is not configured on this leader takes no place from the others: created
  ones are not planned here, planned ones are due again at an exponential backoff, with
  ``error.type`` ``provider_not_configured``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import RowMapping

from longops.domain.requests import ANTHROPIC_ENDPOINT, BatchRequest
from longops.domain.statuses import ItemStatus, StopReason
from longops.engine.backoff import exponential, with_jitter
from longops.engine.metrics import Metrics
from longops.providers.base import (
    Provider,
    ProviderBatchInfo,
    ProviderError,
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
    Submission,
)
from longops.providers.registry import ProviderRegistry, not_configured_reason
from longops.settings import Settings
from longops.store import provider_batches as pbs
from longops.store.db import Database
from longops.store.items import ItemSpan, close_items
from longops.store.jobs import CANCELLED_ERROR
from longops.store.transitions import finalize_batch_if_done, start_job
from longops.store.types import utcnow

log = logging.getLogger(__name__)

PLAN_PER_CYCLE = 20
SUBMIT_PER_CYCLE = 20


def _error(exc: ProviderError) -> dict[str, Any]:
    return {"type": exc.error_type, "message": exc.message}


class Submitter:
    name = "submitter"

    def __init__(
        self, db: Database, providers: ProviderRegistry, settings: Settings, metrics: Metrics
    ) -> None:
        self._db = db
        self._providers = providers
        self._settings = settings
        self._metrics = metrics

    async def run_once(self) -> float:
        for job_id, provider_name in await pbs.batches_to_plan(
            self._db, PLAN_PER_CYCLE, only=self._providers.names(), exclude=self._providers.emulated
        ):
            provider = self._providers.get(provider_name)
            assert provider is not None  # batches_to_plan returns only the configured ones
            await pbs.plan_submission(
                self._db,
                job_id,
                utcnow(),
                provider=provider_name,
                max_requests=provider.max_requests,
                max_bytes=provider.max_bytes,
            )
        due = await pbs.due_submissions(self._db, utcnow(), SUBMIT_PER_CYCLE)
        for pb in due:
            await self._advance(pb)
        return 0.0 if len(due) == SUBMIT_PER_CYCLE else self._settings.submit_interval_seconds

    async def _advance(self, pb: RowMapping) -> None:
        provider = self._providers.get(pb["provider"])
        if provider is None:
            # Backed off as the poller does, so such rows never fill the cycle and starve the rest.
            log.warning(
                "provider batch %s uses provider %r, not configured here; will retry",
                pb["id"],
                pb["provider"],
            )
            delay = exponential(
                int(pb["poll_errors"]) + 1,
                base=self._settings.submit_interval_seconds,
                cap=self._settings.poll_max_backoff_seconds,
            )
            now = utcnow()
            await pbs.postpone_submission(
                self._db,
                pb["id"],
                now,
                now + timedelta(seconds=delay),
                {
                    "type": "provider_not_configured",
                    "message": not_configured_reason(pb["provider"], self._providers.names()),
                },
            )
            return
        if pb["submit_started_at"] is not None:
            if not self._attempt_settled(pb):
                return
            adopted = await self._reconcile(provider, pb)
            if adopted is not False:
                return
        if pb["cancel_requested_at"] is not None:
            await self._close_cancelled(pb)
            return
        await self._send(provider, pb)

    def _attempt_settled(self, pb: RowMapping) -> bool:
        """Whether the last attempt is old enough that its create call can no longer be in flight.

        A previous leader may have recorded the intent and be about to call the provider; its call
        times out after PROVIDER_TIMEOUT_SECONDS, so reconciling before then could miss a batch that
        is still being created and send it twice.
        """
        settle = timedelta(
            seconds=self._settings.provider_timeout_seconds + self._settings.provider_clock_skew_seconds
        )
        return bool(pb["submit_started_at"] <= utcnow() - settle or pb["submit_outcome_unknown"])

    async def _window(self, provider: Provider, pb: RowMapping) -> tuple[datetime, datetime]:
        """When the provider may have created this attempt's batch, by the provider's clock.

        From the attempt (its intent is committed just before the call) until the call's timeout,
        widened by the allowed clock skew (PROVIDER_CLOCK_SKEW_SECONDS), but never past the next
        unresolved attempt: submissions are sequential, so a later attempt started only after this
        one's call had returned or its process had died, and what the provider created after it
        belongs to it. A provider clock running behind ours can still blur that boundary; then
        two candidates match and reconciliation refuses to guess.
        """
        attempt: datetime = pb["submit_started_at"]
        skew = timedelta(seconds=self._settings.provider_clock_skew_seconds)
        end = attempt + timedelta(seconds=self._settings.provider_timeout_seconds) + skew
        later = [at for _, at in await pbs.unresolved_attempts(self._db, provider.name) if at > attempt]
        return attempt - skew, min([end, *later])

    async def _reconcile(self, provider: Provider, pb: RowMapping) -> bool | None:
        """Find out whether an earlier attempt created the batch. False: it did not (safe to send)."""
        now = utcnow()
        since, until = await self._window(provider, pb)
        try:
            recent = await provider.list_recent(since)
        except ProviderError as exc:
            log.warning("cannot reconcile provider batch %s yet: %s", pb["id"], exc)
            await pbs.record_outcome_unknown(
                self._db, pb["id"], now, now + self._retry_delay(pb), _error(exc)
            )
            return None
        if provider.tags_batches:
            matching = [b for b in recent if b.reference == pb["id"]]
        else:
            matching = [
                b for b in recent if b.request_count == pb["request_count"] and since <= b.created_at < until
            ]
        known = await pbs.known_provider_batch_ids(
            self._db, provider.name, [b.provider_batch_id for b in matching]
        )
        candidates = [b for b in matching if b.provider_batch_id not in known]
        if not candidates:
            log.info("provider batch %s: no earlier submission found at %s; sending", pb["id"], provider.name)
            if pb["staged"] and not await self._discard(provider, pb):
                return None
            return False
        if len(candidates) == 1:
            log.warning(
                "provider batch %s: adopting %s found by reconciliation",
                pb["id"],
                candidates[0].provider_batch_id,
            )
            await self._store_submitted(provider, pb, candidates[0])
            return True
        names = ", ".join(b.provider_batch_id for b in candidates)
        await self._fail(
            pb,
            {
                "type": StopReason.SUBMISSION_UNKNOWN.value,
                "message": (
                    f"the submission outcome could not be established: several candidate batches ({names})"
                ),
            },
        )
        return True

    async def _discard(self, provider: Provider, pb: RowMapping) -> bool:
        """Delete what an attempt that created nothing staged; False: not now (retried at a backoff,
        reconciling again first)."""
        try:
            await provider.discard(pb["staged"])
        except ProviderError as exc:
            log.warning("cannot discard what %s staged at %s yet: %s", pb["id"], provider.name, exc.message)
            now = utcnow()
            await pbs.record_outcome_unknown(
                self._db, pb["id"], now, now + self._retry_delay(pb), _error(exc)
            )
            return False
        await pbs.record_staged(self._db, pb["id"], None)
        return True

    async def _send(self, provider: Provider, pb: RowMapping) -> None:
        now = utcnow()
        if not await pbs.mark_submit_started(self._db, pb["id"], now):
            return
        submission = Submission(
            reference=pb["id"],
            # NULL only for a batch an instance older than migration 0007 stored meanwhile.
            endpoint=pb["endpoint"] or ANTHROPIC_ENDPOINT,
            request_count=int(pb["request_count"]),
        )

        async def on_staged(staged: Mapping[str, str]) -> None:
            await pbs.record_staged(self._db, pb["id"], staged)

        # Read from the database while the body is sent: a failed read breaks the request midway,
        # which nothing can take for a whole batch; the intent recorded above then reconciles.
        requests = (
            BatchRequest(custom_id, params) async for custom_id, params in pbs.request_params(self._db, pb)
        )
        try:
            info = await provider.create(submission, requests, on_staged)
        except ProviderRejected as exc:
            self._metrics.submit_errors.inc()
            log.warning("provider %s rejected provider batch %s: %s", provider.name, pb["id"], exc.message)
            await self._fail(pb, _error(exc))
            return
        except ProviderUnavailable as exc:
            self._metrics.submit_errors.inc()
            log.warning(
                "provider %s unavailable for %s (nothing created): %s", provider.name, pb["id"], exc.message
            )
            await pbs.record_not_sent(
                self._db, pb["id"], utcnow(), utcnow() + self._retry_delay(pb), _error(exc)
            )
            return
        except (ProviderOutcomeUnknown, ProviderError) as exc:
            self._metrics.submit_errors.inc()
            log.warning("submission of %s has an unknown outcome; will reconcile: %s", pb["id"], exc.message)
            await pbs.record_outcome_unknown(
                self._db, pb["id"], utcnow(), utcnow() + self._retry_delay(pb), _error(exc)
            )
            return
        await self._store_submitted(provider, pb, info)

    async def _store_submitted(self, provider: Provider, pb: RowMapping, info: ProviderBatchInfo) -> None:
        now = utcnow()
        next_poll = now + timedelta(
            seconds=with_jitter(
                self._settings.poll_interval_for(provider.name), self._settings.poll_jitter_for(provider.name)
            )
        )
        async with self._db.write() as conn:
            stored = await pbs.record_submitted(
                conn,
                pb["id"],
                pb["job_id"],
                provider_batch_id=info.provider_batch_id,
                processing_status=info.processing_status,
                now=now,
                next_poll_at=next_poll,
            )
            if stored:
                await start_job(conn, pb["job_id"], now)
        if stored:
            self._metrics.submitted.inc()
            log.info("provider batch %s submitted as %s", pb["id"], info.provider_batch_id)
            return
        # Another writer recorded this provider batch first (a deposed leader's late write cannot get
        # here without losing this CAS): the batch we just created is an orphan, so stop its spend.
        log.error(
            "provider batch %s was recorded elsewhere; cancelling orphan %s", pb["id"], info.provider_batch_id
        )
        try:
            await provider.cancel(info.provider_batch_id)
        except ProviderError as exc:
            log.error("could not cancel orphan %s: %s", info.provider_batch_id, exc)

    async def _fail(self, pb: RowMapping, error: dict[str, Any]) -> None:
        now = utcnow()
        async with self._db.write() as conn:
            if await pbs.fail_provider_batch(conn, pb["id"], error, now):
                await close_items(
                    conn, pb["job_id"], to=ItemStatus.ERRORED, error=error, now=now, span=ItemSpan.of(pb)
                )
                await finalize_batch_if_done(conn, pb["job_id"], now)

    async def _close_cancelled(self, pb: RowMapping) -> None:
        now = utcnow()
        async with self._db.write() as conn:
            if await pbs.fail_provider_batch(conn, pb["id"], CANCELLED_ERROR, now):
                await close_items(
                    conn,
                    pb["job_id"],
                    to=ItemStatus.CANCELLED,
                    error=CANCELLED_ERROR,
                    now=now,
                    span=ItemSpan.of(pb),
                )
                await finalize_batch_if_done(conn, pb["job_id"], now)

    def _retry_delay(self, pb: RowMapping) -> timedelta:
        return timedelta(
            seconds=exponential(
                int(pb["submit_attempts"]) + 1,
                base=self._settings.submit_interval_seconds,
                cap=self._settings.poll_max_backoff_seconds,
            )
        )
