"""Generic background jobs (issue 6): handlers, workers, leases, cancellation, progress, files, retention.

In-process tests serve the real app and engine in the test's event loop and steer the handlers of
``tests/handlers_example.py`` with asyncio events. Where processes matter (a worker killed mid-job,
a graceful stop, limits across instances, the memory of a server ingesting 200 MB) they run as real
processes. Every wait polls a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import select, update

from longops.engine.retention import ITEM_CHUNK, PRUNE_INTERVAL_SECONDS, Pruner
from longops.settings import Settings
from longops.store import job_queue as queue
from longops.store import jobs as job_store
from longops.store.db import open_database
from longops.store.tables import files, items, jobs
from longops.store.types import utcnow
from longops.store.webhook_tables import webhook_events
from tests import handlers_example
from tests.support.servers import app_in_loop

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = "tests.handlers_example"
LEASE = 1.5


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    return make_settings(
        handlers=HANDLERS,
        job_lease_seconds=LEASE,
        worker_poll_seconds=0.1,
        job_retry_backoff_seconds=0.05,
        worker_shutdown_grace_seconds=1.0,
        files_dir=str(tmp_path / "files"),
        webhook_allow_private=True,
    )


@asynccontextmanager
async def api(settings: Settings, *, run_engine: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app_in_loop(settings, run_engine=run_engine) as app,
        httpx.AsyncClient(base_url=app.url, timeout=30) as client,
    ):
        yield client


async def create(client: httpx.AsyncClient, job_type: str, input: Any = None, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json={"job_type": job_type, "input": input, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def until(
    client: httpx.AsyncClient,
    job_id: str,
    condition: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 20,
) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until ``condition`` holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if condition(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; job is {job}")
        await asyncio.sleep(0.02)


def ended(job: dict[str, Any]) -> bool:
    return job["status"] in ("completed", "failed", "cancelled", "expired")


def gate(name: str) -> asyncio.Event:
    event = asyncio.Event()
    handlers_example.GATES[name] = event
    return event


# -- handlers in-process ----------------------------------------------------------------------------


async def test_handler_runs_to_completion_with_progress_and_result(settings: Settings) -> None:
    release = gate("complete")
    async with api(settings) as client:
        hook = "http://127.0.0.1:9/hook"
        job = await create(client, "stepper", {"gate": "complete"}, metadata={"team": "a"}, callback_url=hook)
        assert job["object"] == "job" and job["job_type"] == "stepper"
        assert job["status"] == "pending" and job["attempts"] == 0 and job["progress"] is None
        assert job["input"] == {"gate": "complete"} and job["metadata"] == {"team": "a"}

        running = await until(
            client, job["id"], lambda j: j["progress"] is not None, "the first progress report"
        )
        assert running["status"] == "running" and running["attempts"] == 1
        assert running["started_at"] is not None and running["result"] is None
        assert running["progress"] == {"completed": 1, "total": 3, "message": "step 1"}

        release.set()
        done = await until(client, job["id"], ended, "the job to end")
        assert done["status"] == "completed", done
        assert done["result"] == {"steps": 3}
        assert done["progress"] == {"completed": 3, "total": 3, "message": "done"}
        assert done["error"] is None and done["stop_reason"] is None and done["attempts"] == 1
        assert done["completed_at"] is not None

        listed = (await client.get("/v1/jobs", params={"job_type": "stepper"})).json()
        assert [j["id"] for j in listed["data"]] == [job["id"]]

    db = open_database(settings.database_url)
    try:
        async with db.read() as conn:
            events = (await conn.execute(select(webhook_events.c.job_id, webhook_events.c.type))).all()
        assert [tuple(event) for event in events] == [(job["id"], "job.completed")], "the outbox has it"
    finally:
        await db.dispose()


async def test_cancel_running_job_ends_cancelled_and_finished_job_cancel_is_409(settings: Settings) -> None:
    gate("cancel-raises")
    gate("cancel-returns")
    async with api(settings) as client:
        raises = await create(client, "stepper", {"gate": "cancel-raises"})
        returns = await create(client, "stubborn", {"gate": "cancel-returns"})
        for job in (raises, returns):
            await until(client, job["id"], lambda j: j["status"] == "running", "the job to run")
            response = await client.post(f"/v1/jobs/{job['id']}/cancel")
            assert response.status_code == 200
            assert response.json()["status"] == "running"
            assert response.json()["cancel_requested_at"] is not None
        for job in (raises, returns):
            done = await until(client, job["id"], ended, "the cancelled job to end")
            assert handlers_example.SEEN[job["id"]] == "cancelled", "the handler saw the cancel request"
            assert done["status"] == "cancelled", done
            assert done["stop_reason"] == "cancelled" and done["result"] is None
            again = await client.post(f"/v1/jobs/{job['id']}/cancel")
            assert again.status_code == 200 and again.json()["status"] == "cancelled"

        finished = await create(client, "echo", {"x": 1})
        done = await until(client, finished["id"], ended, "the echo job to end")
        assert done["status"] == "completed" and done["result"] == {"input": {"x": 1}, "attempt": 1}
        refused = await client.post(f"/v1/jobs/{finished['id']}/cancel")
        assert refused.status_code == 409
        assert refused.json()["error"]["type"] == "invalid_transition"


async def test_timeout_fails_the_job_without_retrying(settings: Settings) -> None:
    async with api(settings) as client:
        job = await create(client, "sleeper", {"seconds": 30})
        done = await until(client, job["id"], ended, "the timeout")
        assert done["status"] == "failed", done
        assert done["stop_reason"] == "timeout" and done["attempts"] == 1
        assert done["error"]["type"] == "timeout"
        assert "0.3 s" in done["error"]["message"]


async def test_handler_exception_is_retried_then_fails_with_a_structured_error(settings: Settings) -> None:
    async with api(settings) as client:
        doomed = await create(client, "flaky", {"succeed_on": 99})
        recovers = await create(client, "flaky", {"succeed_on": 2})
        done = await until(client, doomed["id"], ended, "the failing job to end")
        assert done["status"] == "failed", done
        assert done["stop_reason"] == "handler_error" and done["attempts"] == 2
        assert done["error"] == {"type": "ValueError", "message": "attempt 2 broke"}
        assert "Traceback" not in json.dumps(done)
        done = await until(client, recovers["id"], ended, "the recovering job to end")
        assert done["status"] == "completed" and done["attempts"] == 2, done
        assert done["result"] == {"attempt": 2} and done["error"] is None


async def test_unknown_job_type_is_422_listing_the_known_ones(settings: Settings) -> None:
    async with api(settings, run_engine=False) as client:
        response = await client.post("/v1/jobs", json={"job_type": "nope", "input": {}})
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["type"] == "validation_error"
        assert "unknown job type 'nope'" in error["message"]
        for known in ("batch_ingest", "echo", "flaky", "stepper"):
            assert known in error["message"]
        batch = await client.post("/v1/jobs", json={"job_type": "llm_batch"})
        assert batch.status_code == 422 and "POST /v1/batches" in batch.json()["error"]["message"]
        extra = await client.post("/v1/jobs", json={"job_type": "echo", "priority": 1})
        assert extra.status_code == 422 and "priority" in extra.json()["error"]["message"]
        ingest = await client.post(
            "/v1/jobs", json={"job_type": "batch_ingest", "input": {"file_id": "file_x"}}
        )
        assert ingest.status_code == 422 and "input.provider" in ingest.json()["error"]["message"]


async def test_idempotency_key_replays_the_job(settings: Settings) -> None:
    async with api(settings, run_engine=False) as client:
        body = {"job_type": "echo", "input": {"n": 1}}
        first = await client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
        again = await client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == again.status_code == 201
        assert first.json()["id"] == again.json()["id"]
        other = await client.post(
            "/v1/jobs", json={**body, "input": {"n": 2}}, headers={"Idempotency-Key": "k1"}
        )
        assert other.status_code == 409 and other.json()["error"]["type"] == "idempotency_conflict"


# -- the queue itself: fencing, limits, reaping -----------------------------------------------------


async def test_leases_fence_out_stale_attempts_limits_hold_and_the_reaper_ends_abandoned_jobs(
    database_url: str,
) -> None:
    db = open_database(database_url)  # migrated (the fixture's)
    lease = timedelta(seconds=30)

    async def new(job_type: str, max_attempts: int = 2) -> str:
        job = queue.NewJob(
            org_id="o", job_type=job_type, input=None, max_attempts=max_attempts, timeout_seconds=60
        )
        return str((await queue.create_job(db, job))[0]["id"])

    async def claim(owner: str, now: datetime, slots: int = 10) -> list[queue.Claimed]:
        async with db.write() as conn:
            return await queue.claim_jobs(
                conn, owner=owner, now=now, lease=lease, slots=slots, limits={"a": None, "b": 2}
            )

    async def job(job_id: str) -> Any:
        async with db.read() as conn:
            return (await conn.execute(select(jobs).where(jobs.c.id == job_id))).mappings().one()

    try:
        limited = [await new("b") for _ in range(3)]
        now = utcnow()
        first = await claim("w1", now, slots=1)
        assert [c.id for c in first] == limited[:1]
        second = await claim("w2", now)
        assert [c.id for c in second] == limited[1:2], "the limit of 2 counts w1's live lease"
        assert await claim("w3", now) == []
        done = queue.Outcome(queue.Held(limited[1], 1), queue.OutcomeKind.COMPLETED, result={"by": "w2"})
        async with db.write() as conn:
            assert await queue.record_outcomes(conn, "w2", [done], now) == {limited[1]: "completed"}

        # w1's lease expires; w3 claims its job again, and w1 can no longer write anything about it.
        later = now + lease + timedelta(seconds=1)
        retaken = await claim("w3", later)
        assert sorted((c.id, c.attempt) for c in retaken) == [(limited[0], 2), (limited[2], 1)]
        stale = queue.Outcome(queue.Held(limited[0], 1), queue.OutcomeKind.COMPLETED, result={"by": "w1"})
        current = queue.Outcome(queue.Held(limited[0], 2), queue.OutcomeKind.COMPLETED, result={"by": "w3"})
        async with db.write() as conn:
            assert await queue.renew_leases(conn, "w1", [stale.held], later, lease) == {}
            assert await queue.record_outcomes(conn, "w1", [stale], later) == {}
            assert await queue.record_outcomes(conn, "w3", [current], later) == {limited[0]: "completed"}
        assert (await job(limited[0]))["result"] == {"by": "w3"}

        # A job whose worker died on its last attempt fails with max_attempts once its lease is over;
        # a job waiting for its retry whose cancel is requested ends cancelled.
        exhausted, waiting = await new("a", max_attempts=1), await new("a")
        claimed = {c.id: c for c in await claim("w4", later)}
        retry = queue.Outcome(
            queue.Held(waiting, claimed[waiting].attempt),
            queue.OutcomeKind.RETRY,
            error={"type": "ValueError", "message": "boom"},
            retry_at=later + timedelta(hours=1),
        )
        async with db.write() as conn:
            assert await queue.record_outcomes(conn, "w4", [retry], later) == {waiting: "retry"}
        await job_store.cancel_job(db, "o", waiting)
        async with db.write() as conn:
            assert await queue.reap(conn, later) == {"cancelled": 1, "failed": 0}, "the lease is still live"
            assert await queue.reap(conn, later + lease + timedelta(seconds=1)) == {
                "cancelled": 0,
                "failed": 1,
            }
        ended, cancelled = await job(exhausted), await job(waiting)
        assert (ended["status"], ended["stop_reason"], ended["error"]["type"]) == (
            "failed",
            "max_attempts",
            "lease_expired",
        )
        assert (cancelled["status"], cancelled["stop_reason"], cancelled["error"]) == (
            "cancelled",
            "cancelled",
            None,
        )
        assert ended["lease_owner"] is None and ended["due_at"] is None
    finally:
        await db.dispose()


# -- files and the batch_ingest job -------------------------------------------------------------


def request_line(custom_id: str, text: str = "hello") -> str:
    params = {"model": "claude-sim", "max_tokens": 16, "messages": [{"role": "user", "content": text}]}
    return json.dumps({"custom_id": custom_id, "params": params}) + "\n"


async def upload(client: httpx.AsyncClient, content: bytes, filename: str = "batch.jsonl") -> dict[str, Any]:
    response = await client.post("/v1/files", params={"filename": filename}, content=content)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_batch_ingest_input_over_the_limits_names_the_input_field(settings: Settings) -> None:
    async with api(settings) as client:
        uploaded = await upload(client, request_line("r0").encode())
        base = {"file_id": uploaded["id"], "provider": "simulator"}
        cases = [
            ({**base, "callback_url": "ftp://example.com/hook"}, "input.callback_url: "),
            ({**base, "metadata": {"k" * 10_000: 1}}, "input.metadata"),
        ]
        for input, field in cases:
            response = await client.post("/v1/jobs", json={"job_type": "batch_ingest", "input": input})
            assert response.status_code == 422, response.text
            assert response.json()["error"]["message"].startswith(field), response.json()
        assert (await client.get("/v1/jobs", params={"job_type": "batch_ingest"})).json()["data"] == []


async def test_upload_then_ingest_a_file_into_a_batch_that_runs(settings: Settings, tmp_path: Path) -> None:
    content = "".join(request_line(f"r{i}") for i in range(3)).encode()
    async with api(settings) as client:
        uploaded = await upload(client, content)
        assert uploaded["object"] == "file" and uploaded["id"].startswith("file_")
        assert uploaded["bytes"] == len(content) and uploaded["filename"] == "batch.jsonl"
        assert uploaded["sha256"] == hashlib.sha256(content).hexdigest()
        assert (await client.get(f"/v1/files/{uploaded['id']}")).json() == uploaded
        assert (await client.get("/v1/files/file_unknown")).status_code == 404

        job = await create(client, "batch_ingest", {"file_id": uploaded["id"], "provider": "simulator"})
        done = await until(client, job["id"], ended, "the ingestion")
        assert done["status"] == "completed", done
        assert done["result"]["requests"] == 3 and done["result"]["file_id"] == uploaded["id"]
        batch_id = done["result"]["batch_id"]

        deadline = time.monotonic() + 30
        while (batch := (await client.get(f"/v1/batches/{batch_id}")).json())["status"] != "completed":
            assert time.monotonic() < deadline, f"the ingested batch did not complete: {batch}"
            await asyncio.sleep(0.05)
        assert batch["request_counts"]["succeeded"] == 3
        results = (await client.get(f"/v1/batches/{batch_id}/results")).text.splitlines()
        assert [json.loads(line)["custom_id"] for line in results] == ["r0", "r1", "r2"]


async def test_a_bad_line_fails_the_ingestion_with_its_line_number(settings: Settings) -> None:
    missing_params = request_line("r0") + request_line("r1") + '{"custom_id": "r2"}\n' + request_line("r3")
    # The duplicate comes in a later chunk than the line it repeats: checked against stored rows.
    duplicate = "".join(request_line(f"r{i}") for i in range(2500)) + request_line("r7")
    not_json = request_line("r0") + "\n" + "{oops\n"
    expected = [
        (missing_params, "line 3 (custom_id 'r2').params: is required"),
        (duplicate, "line 2501 (custom_id 'r7').custom_id: is a duplicate: custom_id must be unique"),
        (not_json, "line 3: is not valid JSON: Expecting property name enclosed in double quotes (column 2)"),
    ]
    async with api(settings) as client:
        for content, message in expected:
            uploaded = await upload(client, content.encode())
            job = await create(client, "batch_ingest", {"file_id": uploaded["id"], "provider": "simulator"})
            done = await until(client, job["id"], ended, "the ingestion to fail")
            assert done["status"] == "failed", done
            assert done["error"] == {"type": "validation_error", "message": message}
            assert done["stop_reason"] == "handler_error" and done["attempts"] == 1, "not retried"
        batches = (await client.get("/v1/batches")).json()
        assert batches["data"] == [], "nothing half-written"


async def test_file_size_limit_is_its_own(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(files_dir=str(tmp_path / "files"), max_file_bytes=1000, max_request_bytes=100)
    async with api(settings, run_engine=False) as client:
        assert (await upload(client, b"x" * 1000))["bytes"] == 1000, "MAX_REQUEST_BYTES does not apply"

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(3):
                yield b"y" * 500

        response = await client.post("/v1/files", content=chunked())
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "payload_too_large"
        assert list((tmp_path / "files" / ".incoming").iterdir()) == [], "the partial upload is removed"
        assert (await client.post("/v1/files", content=b"")).status_code == 422


# -- retention ----------------------------------------------------------------------------------


async def test_retention_prunes_only_what_is_older_than_the_window(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"retention_days": 7})
    old = utcnow() - timedelta(days=8)
    recent = utcnow() - timedelta(days=6)
    async with api(settings, run_engine=False) as client:
        requests = [json.loads(request_line(f"r{i}")) for i in range(ITEM_CHUNK + 10)]
        response = await client.post(
            "/v1/batches",
            json={"provider": "simulator", "requests": requests, "callback_url": "http://127.0.0.1:9/hook"},
        )
        old_batch = response.json()["id"]
        await client.post(f"/v1/batches/{old_batch}/cancel")
        old_job, recent_job, active_job = [(await create(client, "echo", {"n": n}))["id"] for n in range(3)]
        for job_id in (old_job, recent_job):
            assert (await client.post(f"/v1/jobs/{job_id}/cancel")).json()["status"] == "cancelled"
        old_file, recent_file = [(await upload(client, request_line(name).encode()))["id"] for name in "ab"]

    db = open_database(settings.database_url)
    try:
        async with db.write() as conn:
            await conn.execute(
                update(jobs).where(jobs.c.id.in_([old_batch, old_job])).values(completed_at=old)
            )
            await conn.execute(update(jobs).where(jobs.c.id == recent_job).values(completed_at=recent))
            await conn.execute(update(jobs).where(jobs.c.id == active_job).values(created_at=old))
            await conn.execute(update(files).where(files.c.id == old_file).values(created_at=old))
            assert (await conn.execute(select(webhook_events.c.job_id))).scalars().all() == [old_batch]
        incoming = tmp_path / "files" / ".incoming"
        abandoned, in_flight = incoming / "file_abandoned.part", incoming / "file_in_flight.part"
        abandoned.write_bytes(b"x")
        in_flight.write_bytes(b"x")
        os.utime(abandoned, (time.time() - 2 * 86400,) * 2)

        pruner = Pruner(db, settings)
        cycles = 1
        while await pruner.run_once() != PRUNE_INTERVAL_SECONDS:
            cycles += 1
            assert cycles < 10
        assert cycles >= 2, "a batch with more items than a chunk takes several bounded cycles"

        async with db.read() as conn:
            remaining = set((await conn.execute(select(jobs.c.id))).scalars())
            assert remaining == {recent_job, active_job}
            assert (await conn.execute(select(items.c.id).limit(1))).first() is None
            assert (await conn.execute(select(webhook_events.c.id))).first() is None
            assert set((await conn.execute(select(files.c.id))).scalars()) == {recent_file}
        stored = {path.name for path in (tmp_path / "files").glob("*.jsonl")}
        assert stored == {f"{recent_file}.jsonl"}
        assert sorted(path.name for path in incoming.iterdir()) == ["file_in_flight.part"]
    finally:
        await db.dispose()


# -- real processes -----------------------------------------------------------------------------

ENGINE = (
    "from longops.server import run_engine; from longops.settings import load_settings; "
    "run_engine(load_settings())"
)
SERVER = (
    "import sys; from longops.server import serve; from longops.settings import load_settings; "
    "serve(load_settings(), host='127.0.0.1', port=int(sys.argv[1]))"
)


class Processes:
    """Python processes of one test, killed at the end whatever happens."""

    def __init__(self, workdir: Path, settings: Settings) -> None:
        self.workdir = workdir
        self.env = {
            "LONGOPS_DATABASE_URL": settings.database_url,
            "LONGOPS_HANDLERS": HANDLERS,
            "LONGOPS_JOB_LEASE_SECONDS": "2",
            "LONGOPS_WORKER_POLL_SECONDS": "0.1",
            "LONGOPS_SIMULATOR_STATE_DIR": str(workdir / "simulator"),
            "LONGOPS_FILES_DIR": settings.files_dir,
            "LONGOPS_LOG_LEVEL": "INFO",
        }
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, code: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            env={**os.environ, **self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def kill_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@contextmanager
def processes(workdir: Path, settings: Settings) -> Iterator[Processes]:
    group = Processes(workdir, settings)
    try:
        yield group
    finally:
        group.kill_all()


async def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def test_a_killed_worker_job_runs_again_elsewhere_once(
    settings: Settings, tmp_path: Path, database_url: str
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    async with api(settings, run_engine=False) as client:
        with processes(tmp_path, settings) as group:
            engines = [group.start("engine-a", ENGINE)]
            if not database_url.startswith("sqlite"):
                engines.append(group.start("engine-b", ENGINE))  # a second instance already up
            job = await create(client, "crash_once", {"dir": str(marks)})
            started = await wait_until(lambda: next(marks.glob("started-1-*"), None), "attempt 1 to start")
            first = next(engine for engine in engines if started.name == f"started-1-{engine.pid}")
            running = await until(client, job["id"], lambda j: j["status"] == "running", "the job to run")
            assert running["attempts"] == 1

            first.send_signal(signal.SIGKILL)
            first.wait(10)
            db = open_database(settings.database_url)
            try:
                async with db.read() as conn:
                    lease_end = await conn.scalar(select(jobs.c.due_at).where(jobs.c.id == job["id"]))
            finally:
                await db.dispose()
            # SQLite runs one engine per database file: the next one starts once the first is gone.
            others = [engine for engine in engines if engine is not first]
            second = others[0] if others else group.start("engine-b", ENGINE)
            done = await until(client, job["id"], ended, "the job to run again and end", timeout=40)

    assert done["status"] == "completed", done
    assert done["attempts"] == 2
    assert done["result"] == {"attempt": 2, "pid": second.pid}
    assert (marks / "finished").read_text().splitlines() == [f"2 {second.pid}"], "completed once"
    restarted = marks / f"started-2-{second.pid}"
    assert sorted(p.name for p in marks.glob("started-*")) == [f"started-1-{first.pid}", restarted.name]
    assert restarted.stat().st_mtime >= lease_end.timestamp() - 0.05, "not before the lease expired"


async def test_sigterm_lets_running_jobs_finish_within_the_grace_then_releases_the_rest(
    settings: Settings, tmp_path: Path
) -> None:
    quick, slow = tmp_path / "quick", tmp_path / "slow"
    quick.mkdir()
    slow.mkdir()
    async with api(settings, run_engine=False) as client:
        with processes(tmp_path, settings) as group:
            first = group.start("engine-a", ENGINE, LONGOPS_WORKER_SHUTDOWN_GRACE_SECONDS="1")
            finishes = await create(client, "hold", {"dir": str(quick)})
            released = await create(client, "hold", {"dir": str(slow)})
            for marks in (quick, slow):
                await wait_until(
                    lambda m=marks: (m / f"started-1-{first.pid}").exists(), "both jobs to start"
                )
            first.send_signal(signal.SIGTERM)
            (quick / "release").touch()
            assert first.wait(30) == 0, group.log("engine-a")

            done = await until(client, finishes["id"], ended, "the quick job to end")
            assert done["status"] == "completed" and done["result"] == {"attempt": 1, "pid": first.pid}
            given_back = (await client.get(f"/v1/jobs/{released['id']}")).json()
            assert given_back["status"] == "running" and given_back["attempts"] == 0, given_back
            assert "releasing job" in group.log("engine-a")

            (slow / "release").touch()
            second = group.start("engine-b", ENGINE)
            done = await until(client, released["id"], ended, "the released job to run elsewhere", timeout=40)
    assert done["status"] == "completed" and done["attempts"] == 1, "the interrupted attempt is not counted"
    assert done["result"] == {"attempt": 1, "pid": second.pid}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:  # at equal times, -1 sorts first: touching intervals do not overlap
        running += change
        peak = max(peak, running)
    return peak


async def test_per_type_concurrency_limit_holds_across_two_processes(
    settings: Settings, tmp_path: Path, database_url: str
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite runs one engine per database file")
    marks = tmp_path / "marks"
    marks.mkdir()
    async with api(settings, run_engine=False) as client:
        with processes(tmp_path, settings) as group:
            # Two slots each: four could run at once if the limit of three were per process.
            engines = [group.start(f"engine-{n}", ENGINE, LONGOPS_WORKER_CONCURRENCY="2") for n in "ab"]
            for n in "ab":
                await wait_until(
                    lambda n=n: "engine running" in group.log(f"engine-{n}"), "the engines to start"
                )
            created = [await create(client, "limited", {"seconds": 0.4, "dir": str(marks)}) for _ in range(9)]
            for job in created:
                assert (await until(client, job["id"], ended, "every job to end"))["status"] == "completed"
    runs = [path.read_text().split() for path in marks.iterdir()]
    assert len(runs) == 9
    assert max_overlap([(float(start), float(end)) for start, end, _ in runs]) == 3
    assert {int(pid) for _, _, pid in runs} == {engine.pid for engine in engines}


def write_jsonl(path: Path, target_bytes: int) -> tuple[int, str]:
    """Write ~``target_bytes`` of valid request lines (about 2 KB each), streaming; (lines, sha256)."""
    padding = "lorem ipsum " * 160
    digest = hashlib.sha256()
    count = written = 0
    with path.open("wb") as out:
        while written < target_bytes:
            block = "".join(request_line(f"r{count + i}", padding) for i in range(500)).encode()
            out.write(block)
            digest.update(block)
            written += len(block)
            count += 500
    return count, digest.hexdigest()


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


async def test_a_200mb_file_is_uploaded_and_ingested_with_bounded_memory(tmp_path: Path) -> None:
    """On SQLite, the default, where the API, the engine and the database all live in one process.

    (The streaming path is the same on PostgreSQL; one backend keeps the suite's runtime sane.)
    """
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'big.db'}", files_dir=str(tmp_path / "files"))
    source = tmp_path / "big.jsonl"
    lines, sha256 = write_jsonl(source, 200 * 1024 * 1024)
    size = source.stat().st_size
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with processes(tmp_path, settings) as group:
        server = group.start(
            "server",
            SERVER,
            str(port),
            LONGOPS_MAX_REQUEST_BYTES=str(1024 * 1024),  # the upload is not a request body
            LONGOPS_SUBMIT_INTERVAL_SECONDS="3600",  # keep the submitter off this batch
        )
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(answers, "the server to listen", timeout=60)
        baseline = psutil.Process(server.pid).memory_info().rss

        async def stream() -> AsyncIterator[bytes]:
            with source.open("rb") as handle:
                while chunk := handle.read(1024 * 1024):
                    yield chunk

        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            response = await client.post("/v1/files", content=stream())
            assert response.status_code == 201, response.text
            uploaded = response.json()
            assert (uploaded["bytes"], uploaded["sha256"]) == (size, sha256)
            job = await create(client, "batch_ingest", {"file_id": uploaded["id"], "provider": "simulator"})
            done = await until(client, job["id"], ended, "the ingestion", timeout=180)
            assert done["status"] == "completed", done
            assert done["result"]["requests"] == lines
            batch = (await client.get(f"/v1/batches/{done['result']['batch_id']}")).json()
            assert batch["status"] == "created" and batch["request_counts"]["total"] == lines
            page = (await client.get(f"/v1/batches/{batch['id']}/items", params={"limit": 1})).json()
            assert page["data"][0]["custom_id"] == "r0"
            peak = peak_rss_bytes(server.pid)
            assert (await client.post(f"/v1/batches/{batch['id']}/cancel")).json()["status"] == "cancelled"
    assert peak < 300 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MB (at start {baseline / 2**20:.0f} MB)"
