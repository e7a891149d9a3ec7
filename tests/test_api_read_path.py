"""The read path clients poll (``GET /v1/batches/{id}``), on both databases, through a real server.

* A read sees what other connections and processes committed just before it: on SQLite the one-row
  reads run on a connection of their own, inline (``store.reads.SQLiteReader``), and must not answer
  from an old snapshot; a key revoked by ``longops keys revoke`` (another process) fails at once.
* That connection is closed with the database and opened again when needed.
* Many more concurrent reads than the pool has connections all succeed (point reads queue first
  come, first served in front of the pool: ``store.reads``).
* The access line (``api.access_log``): one per request, with method, path, status and duration, even
  for a 401; none with ``ACCESS_LOG=false``; a path cannot split it; and ``longops serve`` writes
  it instead of uvicorn's, not as well.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from longops.store import api_keys
from longops.store import jobs as job_store
from longops.store.db import open_database, sqlite_path
from longops.store.migrate import upgrade_database
from tests.support.harness import requests_for
from tests.support.keys import bearer, create_key_now
from tests.support.processes import cluster
from tests.support.servers import RunningApp, app_in_loop

ACCESS_LOGGER = "longops.access"


@dataclass
class Served:
    app: RunningApp
    client: httpx.AsyncClient
    key: str
    key_id: str
    batch_id: str


@asynccontextmanager
async def serve(settings: Any) -> AsyncIterator[Served]:
    """The app on a loopback port (no engine), a key of organization acme, and a batch of it."""
    async with (
        app_in_loop(settings, run_engine=False) as app,
        httpx.AsyncClient(base_url=app.url, timeout=30) as client,
    ):
        created = await api_keys.create_key(app.app.state.longops.db, "acme")
        response = await client.post(
            "/v1/batches",
            json={"provider": "simulator", "requests": requests_for("a", "b")},
            headers=bearer(created.secret),
        )
        assert response.status_code == 201, response.text
        yield Served(app, client, created.secret, created.record.id, response.json()["id"])


@pytest.fixture
async def served(make_settings: Any) -> AsyncIterator[Served]:
    async with serve(make_settings()) as value:
        yield value


async def test_a_read_sees_what_another_connection_just_committed(served: Served, database_url: str) -> None:
    url = f"/v1/batches/{served.batch_id}"
    first = await served.client.get(url, headers=bearer(served.key))
    assert first.status_code == 200 and first.json()["status"] == "created"
    other = open_database(database_url)  # its own engine: other connections than the server's
    try:
        await job_store.cancel_job(other, "acme", served.batch_id)
    finally:
        await other.dispose()
    after = await served.client.get(url, headers=bearer(served.key))
    assert after.status_code == 200
    assert after.json()["status"] == "cancelled" and after.json()["cancel_requested_at"] is not None


async def test_many_more_concurrent_reads_than_pooled_connections_all_succeed(served: Served) -> None:
    """200 reads at once: beyond the fair gate in front of the pool, and the pool itself (24)."""
    url = f"/v1/batches/{served.batch_id}"
    answers = await asyncio.gather(*(served.client.get(url, headers=bearer(served.key)) for _ in range(200)))
    assert {answer.status_code for answer in answers} == {200}
    assert {answer.json()["id"] for answer in answers} == {served.batch_id}


async def test_a_key_revoked_by_another_process_is_refused_at_once(served: Served, database_url: str) -> None:
    url = f"/v1/batches/{served.batch_id}"
    assert (await served.client.get(url, headers=bearer(served.key))).status_code == 200
    revoke = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "longops",
        "keys",
        "revoke",
        served.key_id,
        env={**os.environ, "LONGOPS_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await revoke.communicate()
    assert revoke.returncode == 0, output.decode()
    refused = await served.client.get(url, headers=bearer(served.key))
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"


def _open_paths(prefix: Path) -> list[str]:
    return [f.path for f in psutil.Process().open_files() if f.path.startswith(str(prefix))]


async def test_the_sqlite_read_connection_closes_with_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reads.db'}"
    path = sqlite_path(url)
    assert path is not None
    db = open_database(url)
    await upgrade_database(db)
    key = (await api_keys.create_key(db, "acme")).secret
    await db.dispose()
    assert _open_paths(path) == []
    assert await api_keys.org_for_key(db, key) == "acme"  # the inline read opens its connection
    assert _open_paths(path) != []
    await db.dispose()
    assert _open_paths(path) == []
    assert await api_keys.org_for_key(db, key) == "acme"  # usable again after dispose, as the engine is
    await db.dispose()


async def test_one_access_line_per_request(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    url = f"/v1/batches/{served.batch_id}"
    assert (await served.client.get(url, headers=bearer(served.key))).status_code == 200
    assert (await served.client.get(url + "?x=1", headers=bearer(served.key))).status_code == 422
    assert (await served.client.get(url)).status_code == 401
    assert (await served.client.get("/v1/batches/a%0Ab", headers=bearer(served.key))).status_code == 404
    lines = [record.getMessage() for record in caplog.records if record.name == ACCESS_LOGGER]
    assert len(lines) == 4, lines
    expected = [
        f'"GET {url} HTTP/1.1" 200 ',
        f'"GET {url}?x=1 HTTP/1.1" 422 ',
        f'"GET {url} HTTP/1.1" 401 ',
        '"GET /v1/batches/a%0Ab HTTP/1.1" 404 ',
    ]
    for line, request_and_status in zip(lines, expected, strict=True):
        client, _, rest = line.partition(" - ")
        assert client.startswith("127.0.0.1:")
        assert rest.startswith(request_and_status), line
        duration = rest.removeprefix(request_and_status)
        assert duration.endswith("ms") and float(duration.removesuffix("ms")) >= 0
        assert "\n" not in line


async def test_no_access_line_with_access_log_off(
    make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    async with serve(make_settings(access_log=False)) as s:
        assert (await s.client.get(f"/v1/batches/{s.batch_id}", headers=bearer(s.key))).status_code == 200
    assert [record for record in caplog.records if record.name == ACCESS_LOGGER] == []


def test_the_server_writes_our_access_line_and_not_uvicorns(database_url: str, tmp_path: Path) -> None:
    with cluster(tmp_path, LONGOPS_DATABASE_URL=database_url) as group:
        url = group.start_server("api", "--no-engine")  # migrates the database
        key = create_key_now(database_url, "acme")
        assert httpx.get(f"{url}/v1/batches/job_missing", headers=bearer(key)).status_code == 404
        group.processes[0].terminate()
        log = group.processes[0].log()
    lines = [line for line in log.splitlines() if "/v1/batches/job_missing" in line]
    assert len(lines) == 1, log
    assert " INFO longops.access: 127.0.0.1:" in lines[0]
    assert '"GET /v1/batches/job_missing HTTP/1.1" 404 ' in lines[0] and lines[0].endswith("ms")
