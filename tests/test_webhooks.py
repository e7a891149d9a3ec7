"""Webhooks (DESIGN §5 "Webhooks"): outbox, signed delivery, retries, redelivery, SSRF guard.

Deliveries go to ``Receiver``, a real HTTP server on a loopback port that answers from a script, so
loopback callbacks need ``webhook_allow_private=True`` here. The address-check tests give the
dispatcher its own resolver (its constructor argument): nothing of ours is patched.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
import standardwebhooks
from sqlalchemy import insert, select

from longops.domain.clock import ManualClock
from longops.domain.requests import parse_requests
from longops.domain.statuses import JobStatus
from longops.engine.webhooks import WebhookDispatcher
from longops.net import UnsafeCallbackURL, address_problem, check_callback_url
from longops.settings import Settings
from longops.store import events
from longops.store import jobs as job_store
from longops.store.db import Database, open_database
from longops.store.tables import jobs
from longops.store.transitions import finish_job, finish_jobs
from longops.store.types import utcnow
from longops.store.webhook_tables import webhook_events
from longops.webhooks import WebhookVerificationError, generate_secret, sign, verify
from tests.support.receiver import Answer, Receiver, wait_until
from tests.support.servers import app_in_loop

SECRET = generate_secret()
REQUEST = {
    "custom_id": "a",
    "params": {"model": "claude-x", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


def webhook_settings(make_settings: Callable[..., Settings], **overrides: object) -> Settings:
    values: dict[str, object] = {
        "webhook_allow_private": True,
        "webhook_backoff_seconds": 0.05,
        "webhook_secret": SECRET,
    }
    values.update(overrides)
    return make_settings(**values)


async def create_batch(client: httpx.AsyncClient, callback_url: str | None) -> dict[str, Any]:
    response = await client.post(
        "/v1/batches", json={"provider": "simulator", "requests": [REQUEST], "callback_url": callback_url}
    )
    assert response.status_code == 201, response.text
    batch: dict[str, Any] = response.json()
    return batch


async def get(client: httpx.AsyncClient, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


async def deliveries(client: httpx.AsyncClient, batch_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = (await get(client, f"/v1/batches/{batch_id}/deliveries"))["data"]
    return data


@asynccontextmanager
async def migrated(database_url: str) -> AsyncIterator[Database]:
    """The test's database (migrated by its fixture), opened."""
    db = open_database(database_url)
    try:
        yield db
    finally:
        await db.dispose()


async def event_row(db: Database, job_id: str) -> Any:
    async with db.read() as conn:
        return (
            (await conn.execute(select(webhook_events).where(webhook_events.c.job_id == job_id)))
            .mappings()
            .one()
        )


async def event_state(database_url: str, job_id: str) -> str:
    async with migrated(database_url) as db:
        return str((await event_row(db, job_id))["state"])


async def ended_batch(db: Database, callback_url: str | None) -> str:
    """A batch stored and then cancelled before submission: terminal at once (store paths of the API)."""
    requests = parse_requests([REQUEST], openai_endpoint=None, max_requests=10)
    new = job_store.NewBatch(
        org_id="default", provider="simulator", requests=requests, callback_url=callback_url
    )
    job_id, _ = await job_store.create_batch(db, new)
    await job_store.cancel_job(db, "default", job_id)
    return job_id


def resolver(answers: dict[str, str]) -> Callable[[str, int], Awaitable[Sequence[str]]]:
    """A DNS stand-in answering from ``answers`` (a dict the test may change between lookups)."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise OSError(f"unknown host {host}")
        return [answers[host]]

    return resolve


# --- delivery through the running server ----------------------------------------------------------


async def test_retries_until_2xx_with_a_stable_id_and_valid_signatures(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    receiver.answer(Answer(500), Answer(500), Answer(200))
    async with (
        app_in_loop(webhook_settings(make_settings)) as app,
        httpx.AsyncClient(base_url=app.url) as client,
    ):
        batch = await create_batch(client, receiver.url)

        async def delivered() -> bool:
            return (await get(client, f"/v1/batches/{batch['id']}"))["callback"]["sent_at"] is not None

        await wait_until(delivered, what="delivery")
        batch = await get(client, f"/v1/batches/{batch['id']}")
        job = await get(client, f"/v1/jobs/{batch['id']}")
        attempts = await deliveries(client, batch["id"])
        assert await get(client, f"/v1/jobs/{batch['id']}/deliveries") == {"data": attempts}

    assert receiver.statuses() == [500, 500, 200]
    ids = {hit.headers["webhook-id"] for hit in receiver.hits}
    assert len(ids) == 1 and ids.pop().startswith("evt_")
    assert len({hit.body for hit in receiver.hits}) == 1  # the same body on every attempt
    reference = standardwebhooks.Webhook(SECRET)
    for hit in receiver.hits:
        assert hit.headers["content-type"] == "application/json"
        payload = verify(hit.body, hit.headers, SECRET)
        assert reference.verify(hit.body, hit.headers) == payload
        assert payload["type"] == "batch.completed"
        assert payload["timestamp"] == batch["completed_at"]
        assert payload["data"]["id"] == batch["id"]
        assert payload["data"]["status"] == "completed"
        assert payload["data"]["object"] == "batch"
    # backoff: 0.05 s then 0.1 s (jitter only adds)
    assert receiver.hits[1].at - receiver.hits[0].at >= 0.05
    assert receiver.hits[2].at - receiver.hits[1].at >= 0.1

    assert [(d["attempt"], d["status_code"]) for d in attempts] == [(1, 500), (2, 500), (3, 200)]
    assert all(d["error"] and "500" in d["error"] for d in attempts[:2])
    assert attempts[2]["error"] is None
    assert all(isinstance(d["duration_ms"], int) and d["at"].endswith("Z") for d in attempts)
    assert batch["status"] == "completed" and job["status"] == "completed"
    callback = batch["callback"]
    assert callback["status_code"] == 200 and callback["error"] is None and callback["attempts"] == 3
    assert callback["sent_at"] >= attempts[2]["at"]
    assert job["callback"] == callback


async def test_pending_event_is_delivered_after_a_restart(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = webhook_settings(make_settings, webhook_backoff_seconds=0.3)
    receiver.answer(Answer(503))
    async with app_in_loop(settings) as app, httpx.AsyncClient(base_url=app.url) as client:
        batch = await create_batch(client, receiver.url)

        async def attempted() -> bool:
            return len(await deliveries(client, batch["id"])) >= 1

        await wait_until(attempted, what="a first attempt")
    failed_before_restart = len(receiver.hits)
    assert await event_state(settings.database_url, batch["id"]) == "pending"

    receiver.answer(Answer(200))
    async with app_in_loop(settings) as app, httpx.AsyncClient(base_url=app.url) as client:

        async def delivered() -> bool:
            return (await get(client, f"/v1/batches/{batch['id']}"))["callback"]["sent_at"] is not None

        await wait_until(delivered, what="delivery after the restart")
        attempts = await deliveries(client, batch["id"])
        batch = await get(client, f"/v1/batches/{batch['id']}")

    assert receiver.statuses() == [503] * failed_before_restart + [200]
    assert len({hit.headers["webhook-id"] for hit in receiver.hits}) == 1
    assert [d["status_code"] for d in attempts] == [503] * failed_before_restart + [200]
    assert batch["callback"]["attempts"] == failed_before_restart + 1
    assert batch["status"] == "completed"


async def test_receiver_timeouts_are_retried_until_the_budget_is_spent(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = webhook_settings(make_settings, webhook_timeout_seconds=0.3, webhook_max_attempts=2)
    receiver.answer(Answer(200, delay=3600.0))  # never answers in time: ending at all shows the cut
    async with app_in_loop(settings) as app, httpx.AsyncClient(base_url=app.url) as client:
        batch = await create_batch(client, receiver.url)

        async def spent() -> bool:
            return len(await deliveries(client, batch["id"])) == 2

        await wait_until(spent, what="two attempts")
        batch = await get(client, f"/v1/batches/{batch['id']}")
        attempts = await deliveries(client, batch["id"])
        assert await event_state(settings.database_url, batch["id"]) == "failed"

    for attempt in attempts:
        assert attempt["status_code"] is None
        assert attempt["error"] == "timed out after 0.3s"
        assert attempt["duration_ms"] >= 250  # cut at the timeout (0.3 s), not sooner
    assert batch["callback"] == {
        "sent_at": None,
        "status_code": None,
        "error": "timed out after 0.3s",
        "attempts": 2,
    }
    assert batch["status"] == "completed"
    assert len(receiver.hits) == 2


async def test_410_stops_retrying_and_redeliver_sends_the_same_event_again(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = webhook_settings(make_settings)
    receiver.answer(Answer(410))
    async with app_in_loop(settings) as app, httpx.AsyncClient(base_url=app.url) as client:
        batch = await create_batch(client, receiver.url)

        async def answered() -> bool:
            return len(await deliveries(client, batch["id"])) == 1

        await wait_until(answered, what="the first attempt")
        assert await event_state(settings.database_url, batch["id"]) == "gone"
        gone = await get(client, f"/v1/batches/{batch['id']}")
        assert gone["callback"]["status_code"] == 410
        assert gone["callback"]["attempts"] == 1
        assert "410" in gone["callback"]["error"]

        receiver.answer(Answer(200))
        response = await client.post(f"/v1/batches/{batch['id']}/deliveries/redeliver")
        assert response.status_code == 202, response.text
        event = response.json()
        assert event["id"] == receiver.hits[0].headers["webhook-id"]
        assert event["state"] == "pending"

        async def delivered() -> bool:
            return (await get(client, f"/v1/batches/{batch['id']}"))["callback"]["sent_at"] is not None

        await wait_until(delivered, what="the redelivery")
        response = await client.post(f"/v1/jobs/{batch['id']}/deliveries/redeliver")
        assert response.status_code == 202, response.text
        await wait_until(lambda: len(receiver.hits) == 3, what="the second redelivery")

        async def recorded() -> bool:
            return len(await deliveries(client, batch["id"])) == 3

        await wait_until(recorded, what="the second redelivery's record")
        attempts = await deliveries(client, batch["id"])
        batch = await get(client, f"/v1/batches/{batch['id']}")

    assert receiver.statuses() == [410, 200, 200]
    assert len({hit.headers["webhook-id"] for hit in receiver.hits}) == 1
    assert len({hit.body for hit in receiver.hits}) == 1
    assert [d["status_code"] for d in attempts] == [410, 200, 200]
    assert batch["callback"]["attempts"] == 3 and batch["callback"]["error"] is None
    assert batch["status"] == "completed"


async def test_an_unreachable_receiver_is_tried_max_attempts_times(
    make_settings: Callable[..., Settings],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    settings = webhook_settings(make_settings, webhook_max_attempts=3)
    async with app_in_loop(settings) as app, httpx.AsyncClient(base_url=app.url) as client:
        batch = await create_batch(client, f"http://127.0.0.1:{closed_port}/hook")

        async def spent() -> bool:
            return (await get(client, f"/v1/batches/{batch['id']}"))["callback"]["attempts"] == 3

        await wait_until(spent, what="three attempts")
        assert await event_state(settings.database_url, batch["id"]) == "failed"
        attempts = await deliveries(client, batch["id"])
        batch = await get(client, f"/v1/batches/{batch['id']}")

    assert [d["attempt"] for d in attempts] == [1, 2, 3]
    assert all(d["status_code"] is None and "ConnectError" in d["error"] for d in attempts)
    callback = batch["callback"]
    assert (
        callback["sent_at"] is None
        and callback["status_code"] is None
        and "ConnectError" in callback["error"]
    )
    assert batch["status"] == "completed"


async def test_redeliver_and_deliveries_answer_404_and_409(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = webhook_settings(make_settings)
    async with (
        app_in_loop(settings, run_engine=False) as app,
        httpx.AsyncClient(base_url=app.url) as client,
    ):
        with_callback = await create_batch(client, receiver.url)
        without = await create_batch(client, None)

        response = await client.post(f"/v1/batches/{with_callback['id']}/deliveries/redeliver")
        assert response.status_code == 409
        assert response.json()["error"]["type"] == "invalid_transition"
        for path in ("/v1/batches/job_nope/deliveries", "/v1/jobs/job_nope/deliveries/redeliver"):
            response = await (client.get(path) if path.endswith("deliveries") else client.post(path))
            assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"

        for batch in (with_callback, without):
            assert (await client.post(f"/v1/batches/{batch['id']}/cancel")).json()["status"] == "cancelled"
            assert await deliveries(client, batch["id"]) == []
        response = await client.post(f"/v1/batches/{without['id']}/deliveries/redeliver")
        assert response.status_code == 404 and "callback_url" in response.json()["error"]["message"]
        response = await client.post(f"/v1/batches/{with_callback['id']}/deliveries/redeliver")
        assert response.status_code == 202 and response.json()["type"] == "batch.cancelled"


# --- signatures ---------------------------------------------------------------------------------


def test_signatures_agree_with_the_reference_implementation() -> None:
    body = json.dumps({"type": "batch.completed", "data": {"id": "job_1"}}).encode()
    timestamp = int(time.time())
    ours = sign(body, msg_id="evt_1", timestamp=timestamp, secret=SECRET)
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(timestamp), "webhook-signature": ours}
    reference = standardwebhooks.Webhook(SECRET)
    assert reference.verify(body, headers) == json.loads(body)
    # and the other way round: the reference's signature (several, space-separated) verifies with ours
    theirs = reference.sign("evt_1", reference_time(timestamp), body.decode())
    headers["webhook-signature"] = f"v2,ignored {theirs}"
    assert verify(body, headers, SECRET) == json.loads(body)
    assert theirs == ours


def reference_time(timestamp: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, tz=UTC)


def test_verify_rejects_tampering_wrong_secrets_and_stale_or_missing_headers() -> None:
    body = b'{"type":"job.completed"}'
    now = int(time.time())

    def headers(timestamp: int = now, secret: str = SECRET, msg_id: str = "evt_1") -> dict[str, str]:
        signature = sign(body, msg_id=msg_id, timestamp=timestamp, secret=secret)
        return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(timestamp), "Webhook-Signature": signature}

    assert verify(body, headers(), SECRET) == {"type": "job.completed"}
    assert verify(body.decode(), headers(now - 290), SECRET)  # str body, within the tolerance

    cases: list[tuple[bytes, dict[str, str], str, str]] = [
        (b'{"type":"job.failed"}', headers(), SECRET, "bad signature"),
        (body, headers(secret=generate_secret()), SECRET, "bad signature"),
        (body, {**headers(), "Webhook-Id": "evt_2"}, SECRET, "bad signature"),
        (body, headers(now - 301), SECRET, "stale timestamp"),
        (body, headers(now + 400), SECRET, "future"),
        (
            body,
            {k: v for k, v in headers().items() if k != "Webhook-Signature"},
            SECRET,
            "missing webhook-signature",
        ),
        (body, {k: v for k, v in headers().items() if k != "Webhook-Id"}, SECRET, "missing webhook-id"),
        (body, {**headers(), "Webhook-Timestamp": "soon"}, SECRET, "not Unix seconds"),
    ]
    for tampered_body, tampered_headers, secret, message in cases:
        with pytest.raises(WebhookVerificationError, match=message):
            verify(tampered_body, tampered_headers, secret)
    # a signature made for an old timestamp is rejected even when the header claims a fresh one
    old = headers(now - 3600)
    with pytest.raises(WebhookVerificationError, match="bad signature"):
        verify(body, {**old, "Webhook-Timestamp": str(now)}, SECRET)
    with pytest.raises(ValueError, match="whsec_"):
        verify(body, headers(), "whsec_not base64!")


# --- SSRF guard ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("100.64.0.1", "not globally routable"),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_address_classification(address: str, problem: str | None) -> None:
    assert address_problem(address) == problem


async def test_private_callback_urls_are_refused_unless_allowed(
    make_settings: Callable[..., Settings],
) -> None:
    refused = [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/hook",
        "http://224.0.0.1/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one number
        "ftp://example.com/hook",
        "not a url",
    ]
    async with (
        app_in_loop(make_settings(), run_engine=False) as app,
        httpx.AsyncClient(base_url=app.url) as client,
    ):
        for url in refused:
            body = {"provider": "simulator", "requests": [REQUEST], "callback_url": url}
            response = await client.post("/v1/batches", json=body)
            assert response.status_code == 422, (url, response.text)
            error = response.json()["error"]
            assert error["type"] == "validation_error"
            assert error["message"].startswith("callback_url:"), error
        assert (await get(client, "/v1/batches"))["data"] == []

    async with (
        app_in_loop(make_settings(webhook_allow_private=True), run_engine=False) as app,
        httpx.AsyncClient(base_url=app.url) as client,
    ):
        batch = await create_batch(client, "http://127.0.0.1:9/hook")
        assert batch["callback_url"] == "http://127.0.0.1:9/hook"


async def test_a_changed_dns_answer_is_checked_again_at_send_time(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    """``hooks.test`` is public when the batch is created and loopback when the webhook is sent.

    ``.test`` never resolves in real DNS (RFC 6761), so the request reaching the receiver in the last
    step shows that the dispatcher connected to the address its own check approved.
    """
    url = f"http://hooks.test:{receiver.port}/hook"
    dns = {"hooks.test": "93.184.216.34"}
    await check_callback_url(url, allow_private=False, resolver=resolver(dns))  # the API's create-time check
    settings = webhook_settings(make_settings, webhook_allow_private=False)
    async with migrated(settings.database_url) as db:
        job_id = await ended_batch(db, url)

        dns["hooks.test"] = "127.0.0.1"  # the answer changes (DNS rebinding)
        with pytest.raises(UnsafeCallbackURL, match="loopback"):
            await check_callback_url(url, allow_private=False, resolver=resolver(dns))
        await WebhookDispatcher(db, settings, resolver=resolver(dns)).run_once()
        assert receiver.hits == []
        async with db.read() as conn:
            [attempt] = await events.list_deliveries(conn, job_id)
        assert attempt["status_code"] is None
        assert "hooks.test" in attempt["error"] and "127.0.0.1, a loopback address" in attempt["error"]
        assert (await event_row(db, job_id))["state"] == "pending"  # retried like any failed attempt

        # With private targets allowed, the request goes to the checked address under the URL's name.
        allowing = webhook_settings(make_settings)
        dispatcher = WebhookDispatcher(db, allowing, resolver=resolver(dns))

        async def sent() -> bool:
            await dispatcher.run_once()
            return bool(receiver.hits)

        await wait_until(sent, what="the pinned request")
        assert receiver.hits[0].headers["host"] == f"hooks.test:{receiver.port}"
        assert (await event_row(db, job_id))["state"] == "delivered"


# --- the outbox and the dispatcher, at the store level --------------------------------------------


def report_job(job_id: str, callback_url: str | None) -> Any:
    """A running generic job row (job type ``report``)."""
    now = utcnow()
    return insert(jobs).values(
        id=job_id,
        org_id="default",
        job_type="report",
        status="running",
        metadata={},
        callback_url=callback_url,
        created_at=now,
        updated_at=now,
    )


async def test_the_event_is_written_by_the_terminal_transition_only(database_url: str) -> None:
    hook = "http://hooks.test/x"
    async with migrated(database_url) as db:
        now = utcnow()
        async with db.write() as conn:
            for job_id, callback in (("job_a", hook), ("job_b", None), ("job_c", hook), ("job_d", hook)):
                await conn.execute(report_job(job_id, callback))
            assert await finish_job(conn, "job_a", JobStatus.FAILED, now)
            assert await finish_job(conn, "job_b", JobStatus.COMPLETED, now)  # no callback_url: no event
            assert not await finish_job(conn, "job_a", JobStatus.COMPLETED, now)  # CAS lost: no event
            rows = {"job_c": {"result": {"n": 1}}, "job_d": {"result": {"n": 2}}, "job_a": {}}
            assert set(await finish_jobs(conn, JobStatus.COMPLETED, now, rows)) == {"job_c", "job_d"}
        with pytest.raises(RuntimeError):  # a transition rolled back with its transaction leaves no event
            async with db.write() as conn:
                await conn.execute(report_job("job_e", hook))
                assert await finish_job(conn, "job_e", JobStatus.COMPLETED, now)
                raise RuntimeError("crash before commit")
        async with db.read() as conn:
            rows = (
                (await conn.execute(select(webhook_events).order_by(webhook_events.c.job_id)))
                .mappings()
                .all()
            )
        assert [(r["job_id"], r["type"], r["state"]) for r in rows] == [
            ("job_a", "job.failed", "pending"),
            ("job_c", "job.completed", "pending"),
            ("job_d", "job.completed", "pending"),
        ]
        assert len({r["id"] for r in rows}) == 3 and all(r["id"].startswith("evt_") for r in rows)
        assert all(r["occurred_at"] == now == r["next_attempt_at"] for r in rows)


async def test_a_job_event_carries_the_job_object(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = webhook_settings(make_settings)
    async with migrated(settings.database_url) as db:
        async with db.write() as conn:
            await conn.execute(report_job("job_report", receiver.url))
            error = {"type": "handler_error", "message": "boom"}
            assert await finish_job(conn, "job_report", JobStatus.FAILED, utcnow(), error=error)
        await WebhookDispatcher(db, settings).run_once()
        async with db.read() as conn:
            status = await conn.scalar(select(jobs.c.status).where(jobs.c.id == "job_report"))
    [hit] = receiver.hits
    payload = verify(hit.body, hit.headers, SECRET)
    assert payload["type"] == "job.failed"
    assert payload["data"]["object"] == "job" and payload["data"]["job_type"] == "report"
    assert payload["data"]["status"] == "failed" and payload["data"]["error"] == error
    assert status == "failed"


async def test_concurrent_dispatchers_send_each_event_once(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = webhook_settings(make_settings)
    async with migrated(settings.database_url) as db, migrated(settings.database_url) as other_db:
        job_ids = [await ended_batch(db, receiver.url) for _ in range(40)]
        first, second = WebhookDispatcher(db, settings), WebhookDispatcher(other_db, settings)

        async def all_delivered() -> bool:
            await asyncio.gather(first.run_once(), second.run_once())
            async with db.read() as conn:
                states = (await conn.execute(select(webhook_events.c.state))).scalars().all()
            return set(states) == {"delivered"}

        await wait_until(all_delivered, what="every event delivered")
    assert len(receiver.hits) == 40
    assert len({hit.headers["webhook-id"] for hit in receiver.hits}) == 40
    assert {json.loads(hit.body)["data"]["id"] for hit in receiver.hits} == set(job_ids)


async def test_an_abandoned_claim_is_sent_again_after_its_lease(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = webhook_settings(make_settings)
    async with migrated(settings.database_url) as db:
        job_id = await ended_batch(db, receiver.url)
        clock = ManualClock()  # time moves only when the test says so, however slow the machine
        async with db.write() as conn:  # a sender claims the event, then dies without a word
            [claim] = await events.claim_due(
                conn, clock(), limit=10, lease=timedelta(seconds=0.5), skip_locked=db.is_postgres
            )
        dispatcher = WebhookDispatcher(db, settings, clock=clock)
        assert await dispatcher.run_once() == 0.5  # leased: not sent, next look at the lease's end
        clock.advance(0.4)
        assert await dispatcher.run_once() == pytest.approx(0.1)  # still leased
        assert receiver.hits == []

        clock.advance(0.1)
        assert await dispatcher.run_once() == 0.0  # the lease is over: sent again
        async with db.read() as conn:
            attempts = await events.list_deliveries(conn, job_id)
        assert [(a["attempt"], a["status_code"], a["error"]) for a in attempts] == [
            (1, None, events.ORPHANED_ATTEMPT),
            (2, 200, None),
        ]
        assert receiver.hits[0].headers["webhook-id"] == claim.event_id
        async with db.read() as conn:
            summary = (await conn.execute(select(jobs.c.callback_attempts, jobs.c.status))).one()
        assert tuple(summary) == (2, "cancelled")
