"""Hostile input and unlucky operators at the API (issue 19, classes 3, 7, 8, 9 and 10), on both
backends: real ``longops serve`` processes where the server's own parsing or log is the subject,
the app served in the test's loop elsewhere."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from longops import Client
from longops.settings import Settings
from tests.support.disks import small_disk
from tests.support.harness import requests_for
from tests.support.leadership import query
from tests.support.postgres import dsn
from tests.support.processes import Cluster, cluster, wait_for_async
from tests.support.servers import app_in_loop, app_in_thread

HANDLERS = "tests.handlers_example"


@contextmanager
def served(tmp_path: Path, database_url: str) -> Iterator[tuple[Cluster, str, int]]:
    """One ``longops serve`` process on this test's database; yields it, its URL and port."""
    with cluster(tmp_path, LONGOPS_DATABASE_URL=database_url, LONGOPS_LOG_LEVEL="INFO") as group:
        url = group.start_server("api", "--no-engine")
        yield group, url, int(url.rsplit(":", 1)[1])


def _exchange(port: int, head: bytes) -> bytes:
    """Send ``head`` (which need not be complete) and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_a_huge_or_crowded_request_head_is_refused_before_it_is_parsed(
    tmp_path: Path, database_url: str
) -> None:
    with served(tmp_path, database_url) as (_group, url, port):
        # 70,000 bytes of Authorization and no end of the head: the answer comes without waiting
        # for the rest, which could be 80 MB (or never come).
        answer = _exchange(
            port, b"GET /v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 70_000
        )
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 431 "), answer[:200]
        error = json.loads(body)["error"]
        assert error["type"] == "headers_too_large" and "MAX_HEADER_BYTES" in error["message"]

        many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        answer = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert "MAX_HEADERS" in json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["message"]

        # Within the bounds, requests are served as before, on the same process.
        fine = _exchange(
            port,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 30_000 + b"\r\nConnection: close\r\n\r\n",
        )
        assert fine.startswith(b"HTTP/1.1 200 "), fine[:200]
        assert httpx.get(url + "/v1/batches", timeout=10).status_code == 200


def test_secrets_in_a_query_string_never_reach_the_access_log(tmp_path: Path, database_url: str) -> None:
    with served(tmp_path, database_url) as (group, url, _port):
        answer = httpx.get(
            url + "/v1/batches",
            params={"api_key": "sk-leak-1", "Token": "sk-leak-2", "limit": "5"},
            timeout=10,
        )
        assert answer.status_code == 422  # unknown query parameters are refused, and still logged
        assert (
            httpx.get(url + "/healthz?x-api-key=sk-leak-3&access_token=sk-leak-4", timeout=10).status_code
            == 200
        )
        log = group.processes[0]

        def logged() -> bool:
            return "access_token=REDACTED" in log.log()

        asyncio.run(wait_for_async(logged, 10, "the access line"))
        text = log.log()
        assert "sk-leak" not in text
        assert "api_key=REDACTED" in text and "Token=REDACTED" in text and "limit=5" in text


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_in_loop(settings) as app, httpx.AsyncClient(base_url=app.url, timeout=30) as client:
        yield client


BIG = [2**70, -(2**63) - 1, 2**64, 12345678901234567890123456789]


async def test_what_is_accepted_round_trips_exactly(make_settings: Callable[..., Settings]) -> None:
    async with api(make_settings(handlers=HANDLERS)) as client:
        for value in [*BIG, [2**80], {"n": 2**90}, True, 0, 1.5, "12345678901234567890123456789"]:
            created = await client.post("/v1/jobs", json={"job_type": "echo", "input": value})
            assert created.status_code == 201, created.text
            assert created.json()["input"] == value
            read = await client.get(f"/v1/jobs/{created.json()['id']}")
            assert read.json()["input"] == value and type(read.json()["input"]) is type(value)

        for custom_id in ["abc\n", "abc\r\n", "\nabc", "a" * 65, "a b", "ü", ""]:
            refused = await client.post(
                "/v1/batches",
                json={"provider": "simulator", "requests": [{"custom_id": custom_id, "params": {}}]},
            )
            assert refused.status_code == 422, (custom_id, refused.text)
            error = refused.json()["error"]
            assert error["type"] == "validation_error" and "custom_id" in error["message"]
        listed = await client.get("/v1/batches")
        assert listed.json()["data"] == []  # nothing half-written


async def test_a_cancel_racing_a_jobs_end_answers_what_it_ended_as(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(handlers=HANDLERS, worker_poll_seconds=0.01)
    async with api(settings) as client:
        answers: list[tuple[str, int, dict[str, Any]]] = []
        for _ in range(4):  # bounded: 4 rounds of 10 jobs, each cancelled as it is being run
            jobs = [
                (await client.post("/v1/jobs", json={"job_type": "echo", "input": i})).json()
                for i in range(10)
            ]
            cancels = await asyncio.gather(*(client.post(f"/v1/jobs/{job['id']}/cancel") for job in jobs))
            answers += [(job["id"], r.status_code, r.json()) for job, r in zip(jobs, cancels, strict=True)]
        finals: dict[str, str] = {}

        async def all_ended() -> bool:
            for job_id, _, _ in answers:
                status = (await client.get(f"/v1/jobs/{job_id}")).json()["status"]
                if status in ("completed", "cancelled", "failed"):
                    finals[job_id] = status
            return len(finals) == len(answers)

        await wait_for_async(all_ended, 30, "every job to end")
        for job_id, code, body in answers:
            if code == 200:
                assert finals[job_id] == "cancelled", (body, finals[job_id])
            else:
                assert code == 409, body
                assert body["error"]["type"] == "invalid_transition"
                assert finals[job_id] in body["error"]["message"]


async def _refuse_writes_on(database_url: str, table: str) -> None:
    conn = await asyncpg.connect(dsn(database_url))
    try:
        await conn.execute(
            "CREATE FUNCTION longops_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
            "USING ERRCODE = 'disk_full'; END $$"
        )
        await conn.execute(
            f"CREATE TRIGGER longops_test_disk_full BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION longops_test_disk_full()"
        )
    finally:
        await conn.close()


async def test_a_full_database_answers_507_and_readyz_says_why(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's full disk is the tmpfs test below")
    async with api(make_settings()) as client:
        assert (await client.get("/readyz")).status_code == 200
        await _refuse_writes_on(database_url, "jobs")
        refused = await client.post(
            "/v1/batches", json={"provider": "simulator", "requests": requests_for("a")}
        )
        assert refused.status_code == 507, refused.text
        error = refused.json()["error"]
        assert error["type"] == "insufficient_storage" and "free disk space" in error["message"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["storage"].startswith("full")
        assert (await client.get("/v1/batches")).json()["data"] == []


async def test_a_full_disk_answers_507_to_uploads_and_creates_and_readyz_says_why(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "small", "3m") as disk:
        if database_url.startswith("sqlite"):
            database_url = f"sqlite:///{disk / 'longops.db'}"
        settings = make_settings(database_url=database_url, files_dir=str(disk / "files"))
        async with api(settings) as client:
            assert (await client.get("/readyz")).status_code == 200
            free = (await asyncio.to_thread(__import__("shutil").disk_usage, disk)).free

            async def body() -> AsyncIterator[bytes]:
                for _ in range(free // 65536 + 16):
                    yield b"x" * 65536

            upload = await client.post("/v1/files", content=body())
            assert upload.status_code == 507, upload.text
            assert upload.json()["error"]["type"] == "insufficient_storage"
            assert list((disk / "files").rglob("file_*")) == []  # no partial file left
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["storage"].startswith("full")

            if database_url.startswith("sqlite"):
                (disk / "filler").write_bytes(b"\0" * (free - 64 * 1024))  # leave the database no room
                big = [{"custom_id": f"r{i}", "params": {"text": "y" * 4000}} for i in range(100)]
                refused = await client.post("/v1/batches", json={"provider": "simulator", "requests": big})
                assert refused.status_code == 507, refused.text
                assert "free disk space" in refused.json()["error"]["message"]
                (disk / "filler").unlink()
                assert (await client.get("/v1/batches")).json()["data"] == []  # nothing half-written


def test_a_lost_database_connection_answers_503_and_the_sdk_retries(  # type: ignore[no-untyped-def]
    make_settings, database_url: str
) -> None:
    """A pooled connection the database dropped (a restart, a failover, pg_terminate_backend) is
    a 503 ``database_unavailable`` with Retry-After, never a 500; the SDK's create, which carries an
    Idempotency-Key, is retried and creates the batch once."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to drop a connection")
    body = {"provider": "simulator", "requests": [{"custom_id": "a", "params": {"max_tokens": 8}}]}
    kill = (
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    with app_in_thread(make_settings(), run_engine=False) as app, httpx.Client(base_url=app.url) as client:
        assert client.post("/v1/batches", json=body).status_code == 201  # the pool holds a connection
        assert query(database_url, kill)[0]["n"] >= 1
        refused = client.post("/v1/batches", json=body)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["type"] == "database_unavailable"
        assert refused.headers["retry-after"] == "1"

        query(database_url, kill)
        with Client(base_url=app.url) as sdk:
            batch = sdk.batches.create(provider="simulator", requests=body["requests"])
        listed = client.get("/v1/batches", params={"limit": 10}).json()["data"]
        assert [b["id"] for b in listed].count(batch.id) == 1
        assert len(listed) == 2  # the first create and the SDK's: the refused one stored nothing
