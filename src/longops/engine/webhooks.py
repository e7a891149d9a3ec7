"""Webhook dispatcher (every instance): sends the outbox events of finished jobs, at least once.

Invariants:

* A due event is sent by one dispatcher at a time: it is claimed and leased in one transaction
  (``FOR UPDATE SKIP LOCKED`` on PostgreSQL); the lease outlives the longest attempt, so a claim of a
  dispatcher that died expires and the event is sent again (delivery is at least once; receivers
  deduplicate on ``webhook-id``, the event id, which never changes).
* The body ``{"type", "timestamp", "data"}`` is built once, at the first attempt, from the job row
  (a terminal job's status and counts never change, so this is the job as it ended; ``timestamp`` is
  the time of the terminal transition), then stored and sent byte for byte on every retry and
  redelivery. Only ``webhook-timestamp`` and ``webhook-signature`` differ between attempts.
* Only a 2xx delivers. 410 stops. Anything else (other statuses, redirects — never followed —,
  timeouts, connection and DNS errors, a destination that fails the address check) is retried after
  ``WEBHOOK_BACKOFF_SECONDS × 2^(n−1)`` plus up to 20 % jitter, at most one hour, until the budget of
  ``WEBHOOK_MAX_ATTEMPTS`` is spent (``failed``).
* Before every attempt the callback host is resolved and each address checked (unless
  ``WEBHOOK_ALLOW_PRIVATE``); the request then goes to the checked address itself, with the URL's
  ``Host`` header and, for https, its name for SNI and certificate verification — the name is not
  resolved a second time, so a DNS answer cannot change between the check and the connection.
* Each attempt is bounded by ``WEBHOOK_TIMEOUT_SECONDS`` as a whole and runs as its own task: a
  cycle claims up to ``CLAIM_LIMIT`` due events, waits at most ``IDLE_SECONDS`` for the attempts in
  flight and records those that finished; one still running keeps its place (of ``MAX_IN_FLIGHT``)
  into the next cycles, which claim the next due events meanwhile. So a hanging receiver holds only
  its own place, not the deliveries behind it (another organization's, or the poller). Nothing here
  changes a job's status.
* A cycle costs a constant number of statements: one to record the finished outcomes, one claim
  transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from datetime import datetime, timedelta

import httpx
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from longops._version import __version__
from longops.domain.clock import Clock, system_clock
from longops.domain.prices import PriceTable
from longops.domain.schemas import Batch, Job
from longops.engine.backoff import RETRY_CAP_SECONDS, exponential
from longops.net import Resolver, UnsafeCallbackURL, parse_callback_url, resolve_destination, system_resolver
from longops.pricing import load_price_table
from longops.settings import Settings
from longops.store import events
from longops.store.db import Database
from longops.store.events import AttemptRecord, Claim, EventState
from longops.store.jobs import load_batches
from longops.store.views import LLM_BATCH, job_view
from longops.webhooks import parse_secret, sign

log = logging.getLogger(__name__)

CLAIM_LIMIT = 32  # events claimed per cycle
SHUTDOWN_GRACE_SECONDS = 2.0
MAX_IN_FLIGHT = 256  # attempts running at once (a hanging one holds its place until its timeout)
IDLE_SECONDS = 1.0  # longest wait before looking for newly written events
LEASE_MARGIN_SECONDS = 30.0
ERROR_BODY_CHARS = 200  # of a non-2xx answer's body, kept in the attempt's error


class WebhookEnvelope(BaseModel):
    type: str
    timestamp: datetime
    data: Batch | Job


class WebhookDispatcher:
    name = "webhooks"

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        resolver: Resolver = system_resolver,
        clock: Clock = system_clock,
        prices: PriceTable | None = None,
    ) -> None:
        """``resolver`` answers the address checks before each attempt (the system's by default);
        ``clock`` dates claims, leases, retries and signatures (the system's by default);
        ``prices`` prices a batch's usage in its payload (the table of ``settings`` by default)."""
        self._db = db
        self._clock = clock
        self._settings = settings
        self._prices = prices if prices is not None else load_price_table(settings)
        self._resolver = resolver
        self._key = _secret_key(settings.webhook_secret)
        if self._key is None:
            log.warning("LONGOPS_WEBHOOK_SECRET is not set: webhooks are sent unsigned")
        self._lease = timedelta(seconds=2 * settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
        self._in_flight: set[asyncio.Task[AttemptRecord]] = set()
        self._client: httpx.AsyncClient | None = None

    async def run_once(self) -> float:
        """Claim due events for the free places and start their attempts, then wait for the
        attempts in flight, at most ``IDLE_SECONDS`` (or until the next event is due), and record
        those that finished. An attempt still running (a slow receiver) keeps its place into the
        next cycle, which claims events for the other places meanwhile."""
        room = min(CLAIM_LIMIT, MAX_IN_FLIGHT - len(self._in_flight))
        claims: list[Claim] = []
        next_due = None
        if room > 0:
            async with self._db.write() as conn:
                claims = await events.claim_due(
                    conn, self._clock(), limit=room, lease=self._lease, skip_locked=self._db.is_postgres
                )
                if claims:
                    claims = await self._with_payloads(conn, claims)
                else:
                    next_due = await events.next_due_at(conn)
        for claim in claims:
            self._in_flight.add(
                asyncio.create_task(
                    self._attempt(self._http(), claim), name=f"longops-webhook-{claim.event_id}"
                )
            )
        wait = IDLE_SECONDS
        if next_due is not None:
            wait = min(IDLE_SECONDS, max(0.0, (next_due - self._clock()).total_seconds()))
        if not self._in_flight:
            return wait
        done, _pending = await asyncio.wait(self._in_flight, timeout=IDLE_SECONDS)
        if done:
            await self._record(list(done))
        return 0.0 if claims or done else wait

    async def aclose(self) -> None:
        """Give the attempts in flight ``SHUTDOWN_GRACE_SECONDS`` to finish, record those that did
        and close the HTTP client. An attempt not recorded (cut short here, or a crash) is sent
        again once its claim's lease expires (delivery is at least once)."""
        if self._in_flight:
            await asyncio.wait(
                self._in_flight, timeout=min(SHUTDOWN_GRACE_SECONDS, self._settings.webhook_timeout_seconds)
            )
            with contextlib.suppress(Exception):  # the database may be gone at shutdown
                await self._record([task for task in self._in_flight if task.done()])
            for task in self._in_flight:
                task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False, trust_env=False, timeout=self._settings.webhook_timeout_seconds
            )
        return self._client

    async def _record(self, finished: list[asyncio.Task[AttemptRecord]]) -> None:
        """One transaction for the outcomes of these finished attempts (then they leave the set)."""
        records = [task.result() for task in finished]
        async with self._db.write() as conn:
            await events.record_attempts(conn, records, self._clock())
        self._in_flight.difference_update(finished)
        for record in records:
            if record.state != EventState.PENDING:
                log.info(
                    "webhook %s for %s: %s after attempt %d%s",
                    record.claim.event_id,
                    record.claim.job_id,
                    record.state,
                    record.claim.attempt,
                    f" ({record.error})" if record.error else "",
                )

    async def _with_payloads(self, conn: AsyncConnection, claims: list[Claim]) -> list[Claim]:
        """Build and store the body of events sent for the first time."""
        new = [claim for claim in claims if claim.payload is None]
        if not new:
            return claims
        rows = await events.job_rows(conn, [claim.job_id for claim in new])
        batch_rows = [row for row in rows if row["job_type"] == LLM_BATCH]
        data: dict[str, Batch | Job] = {
            batch.id: batch for batch in await load_batches(conn, batch_rows, self._prices)
        }
        data.update({row["id"]: job_view(row) for row in rows if row["job_type"] != LLM_BATCH})
        payloads = {
            claim.event_id: WebhookEnvelope(
                type=claim.type, timestamp=claim.occurred_at, data=data[claim.job_id]
            ).model_dump_json()
            for claim in new
        }
        await events.save_payloads(conn, payloads, self._clock())
        return [
            dataclasses.replace(claim, payload=payloads[claim.event_id]) if claim.payload is None else claim
            for claim in claims
        ]

    async def _attempt(self, client: httpx.AsyncClient, claim: Claim) -> AttemptRecord:
        timeout = self._settings.webhook_timeout_seconds
        started = time.perf_counter()
        status_code: int | None = None
        try:
            async with asyncio.timeout(timeout):
                status_code, error = await self._post(client, claim)
        except UnsafeCallbackURL as exc:
            error = str(exc)
        except (TimeoutError, httpx.TimeoutException):
            error = f"timed out after {timeout:g}s"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = f"request failed: {type(exc).__name__}: {exc}".rstrip(": ")
        duration_ms = round((time.perf_counter() - started) * 1000)
        state, next_attempt_at = self._next_step(claim, status_code, error)
        return AttemptRecord(claim, status_code, error, duration_ms, state, next_attempt_at)

    async def _post(self, client: httpx.AsyncClient, claim: Claim) -> tuple[int, str | None]:
        """POST to the checked address; (status code, error or None for a 2xx)."""
        assert claim.payload is not None
        destination = parse_callback_url(claim.callback_url)
        addresses = await resolve_destination(
            destination, allow_private=self._settings.webhook_allow_private, resolver=self._resolver
        )
        url = httpx.URL(claim.callback_url)
        body = claim.payload.encode("utf-8")
        timestamp = int(self._clock().timestamp())
        headers = {
            "host": url.netloc.decode("ascii"),
            "content-type": "application/json",
            "user-agent": f"longops/{__version__}",
            "webhook-id": claim.event_id,
            "webhook-timestamp": str(timestamp),
        }
        if self._key is not None:
            headers["webhook-signature"] = sign(
                body, msg_id=claim.event_id, timestamp=timestamp, secret=self._key
            )
        extensions = {}
        if url.scheme == "https" and not destination.host_is_address:
            extensions["sni_hostname"] = url.raw_host.decode("ascii")
        request = client.build_request(
            "POST", url.copy_with(host=addresses[0]), content=body, headers=headers, extensions=extensions
        )
        response = await client.send(request, stream=True)
        try:
            if response.is_success:
                return response.status_code, None
            return response.status_code, _status_error(response.status_code, await _body_start(response))
        finally:
            await response.aclose()

    def _next_step(
        self, claim: Claim, status_code: int | None, error: str | None
    ) -> tuple[EventState, datetime | None]:
        if error is None:
            return EventState.DELIVERED, None
        if status_code == 410:
            return EventState.GONE, None
        used = claim.attempt - claim.budget_base
        if used >= self._settings.webhook_max_attempts:
            return EventState.FAILED, None
        delay = exponential(used, base=self._settings.webhook_backoff_seconds, cap=RETRY_CAP_SECONDS)
        return EventState.PENDING, self._clock() + timedelta(seconds=min(delay, RETRY_CAP_SECONDS))


def _secret_key(secret: str | None) -> bytes | None:
    if not secret:
        return None
    try:
        return parse_secret(secret)
    except ValueError as exc:
        raise ValueError(f"LONGOPS_WEBHOOK_SECRET: {exc}") from exc


async def _body_start(response: httpx.Response) -> str:
    """The first characters of an answer's body, whitespace collapsed (never the whole body)."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= ERROR_BODY_CHARS:
            break
    return " ".join(data.decode("utf-8", "replace").split())[:ERROR_BODY_CHARS]


def _status_error(status_code: int, body: str) -> str:
    if status_code == 410:
        what = "receiver answered 410 Gone: no further attempts"
    elif 300 <= status_code < 400:
        what = f"receiver answered {status_code} (redirects are not followed)"
    else:
        what = f"receiver answered {status_code}"
    return f"{what}: {body}" if body else what
