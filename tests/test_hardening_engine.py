"""The engine under faults (issue 19, classes 2, 4, 6 and the fault storm): connections cut at any
moment, a database that refuses writes, receivers that hang. Real processes where leadership is
the subject (PostgreSQL: ``pg_terminate_backend``); the app and engine in the test's loop elsewhere."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterator
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
from tests.support.postgres import dsn, fresh_database
from tests.support.processes import Cluster, cluster, wait_for, wait_for_async
from tests.support.receiver import Answer, Receiver
from tests.support.servers import app_in_loop

ENGINE_ENV = {
    "LONGOPS_POLL_INTERVAL_SECONDS": "0.3",
    "LONGOPS_POLL_JITTER_SECONDS": "0.1",
    "LONGOPS_SUBMIT_INTERVAL_SECONDS": "0.2",
    "LONGOPS_LEADER_RETRY_SECONDS": "0.3",
    "LONGOPS_LOG_LEVEL": "INFO",
    "LONGOPS_PROVIDER_TIMEOUT_SECONDS": "5",
    "LONGOPS_PROVIDER_CLOCK_SKEW_SECONDS": "0.5",
}


@pytest.fixture
def pg_url(postgres_server_url: str) -> Iterator[str]:
    with fresh_database(postgres_server_url) as url:
        yield url


def _terminate_everyone(url: str) -> int:
    """Cut every connection to this database but the caller's own; how many were cut."""
    rows = query(
        url,
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    return int(rows[0]["n"])


def _storm(url: str, rounds: int) -> int:
    """Cut every longops connection, ``rounds`` times, 0.1 s apart (a fixed, bounded fault load)."""
    cut = 0
    for _ in range(rounds):
        cut += _terminate_everyone(url)
        time.sleep(0.1)  # the fault's cadence, not a synchronization
    return cut


def _ready(url: str) -> dict[str, Any] | None:
    try:
        answer = httpx.get(url + "/readyz", timeout=5)
    except httpx.HTTPError:
        return None
    body: dict[str, Any] = answer.json()
    return body if answer.status_code == 200 else None


def _leaders(urls: list[str]) -> list[str] | None:
    """The instances that are ready and lead; None while any instance is not ready."""
    ready = [_ready(url) for url in urls]
    if any(r is None for r in ready):
        return None
    return [url for url, r in zip(urls, ready, strict=True) if r is not None and r["role"] == "leader"]


def _one_leader(urls: list[str], pg_url: str) -> bool:
    leaders = _leaders(urls)
    if leaders is None or len(leaders) != 1:
        return False
    open_terms = query(pg_url, "SELECT count(*) AS n FROM leader_terms WHERE released_at IS NULL")
    return int(open_terms[0]["n"]) == 1


def _batch_completes_once(api: str, pg_url: str, size: int) -> None:
    # Through the SDK, as a user would: a pooled connection the storm cut is answered 503
    # (database_unavailable), which the SDK retries with the create's Idempotency-Key.
    with Client(base_url=api, timeout=30) as sdk:
        batch_id = sdk.batches.create(provider="simulator", requests=requests_for(*map(str, range(size)))).id
    with httpx.Client(base_url=api, timeout=30) as client:
        wait_for(
            lambda: client.get(f"/v1/batches/{batch_id}").json()["status"] == "completed",
            90,
            "the new batch to complete",
        )
        lines = client.get(f"/v1/batches/{batch_id}/results").text.splitlines()
    assert len(lines) == size
    rows = query(
        pg_url,
        "SELECT count(*) AS n, count(DISTINCT custom_id) AS d, max(attempts) AS a "
        "FROM items WHERE job_id = $1",
        batch_id,
    )
    assert (rows[0]["n"], rows[0]["d"], rows[0]["a"]) == (size, size, 1)


def _start(group: Cluster, names: list[str]) -> list[str]:
    group.start_simulator()
    return [group.start_server(name) for name in names]


def test_a_leader_whose_connections_are_cut_at_election_leads_again(tmp_path: Path, pg_url: str) -> None:
    with cluster(tmp_path, LONGOPS_DATABASE_URL=pg_url, **ENGINE_ENV) as group:
        (url,) = _start(group, ["only"])
        wait_for(lambda: _one_leader([url], pg_url), 60, "the instance to lead")
        assert _storm(pg_url, 30) > 0  # the lock connection, then the pool, while it re-elects

        wait_for(lambda: _one_leader([url], pg_url), 60, "the instance to lead again")
        assert "leadership lost" in group.processes[-1].log()
        _batch_completes_once(url, pg_url, 4)


def test_fault_storm_ends_with_one_leader_and_every_item_once(tmp_path: Path, pg_url: str) -> None:
    with cluster(tmp_path, LONGOPS_DATABASE_URL=pg_url, **ENGINE_ENV) as group:
        urls = _start(group, ["a", "b"])
        wait_for(lambda: _one_leader(urls, pg_url), 60, "one leader")
        before = httpx.post(
            urls[0] + "/v1/batches",
            json={"provider": "simulator", "requests": requests_for("x", "y")},
            timeout=30,
        )
        assert before.status_code == 201
        assert _storm(pg_url, 40) > 0

        wait_for(lambda: _one_leader(urls, pg_url), 60, "exactly one leader after the storm")
        assert all(process.alive() for process in group.processes)
        _batch_completes_once(urls[1], pg_url, 6)
        earlier = httpx.get(urls[0] + f"/v1/batches/{before.json()['id']}", timeout=30).json()
        wait_for(
            lambda: (
                httpx.get(urls[0] + f"/v1/batches/{before.json()['id']}", timeout=30).json()["status"]
                == "completed"
            ),
            90,
            f"the batch created before the storm to complete ({earlier['status']})",
        )


async def test_a_hanging_receiver_does_not_delay_another_delivery(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(webhook_allow_private=True, webhook_timeout_seconds=60.0)
    with Receiver().running() as slow, Receiver().running() as fast:
        slow.answer(Answer(delay=60.0))  # hangs until the test ends
        async with app_in_loop(settings) as app, httpx.AsyncClient(base_url=app.url, timeout=30) as client:

            async def cancelled_batch(callback_url: str) -> str:
                created = await client.post(
                    "/v1/batches",
                    json={
                        "provider": "simulator",
                        "requests": requests_for("x"),
                        "callback_url": callback_url,
                    },
                )
                assert created.status_code == 201, created.text
                batch_id: str = created.json()["id"]
                assert (await client.post(f"/v1/batches/{batch_id}/cancel")).status_code == 200
                return batch_id

            for _ in range(40):  # more than a dispatcher holds in flight (32)
                await cancelled_batch(slow.url)
            await wait_for_async(lambda: len(slow.hits) >= 32, 30, "32 deliveries hanging")
            other = await cancelled_batch(fast.url)

            await wait_for_async(lambda: len(fast.hits) == 1, 30, "the other delivery")
            assert json.loads(fast.hits[0].body)["data"]["id"] == other
            assert len(slow.hits) <= 40  # the slow ones: still hanging (each answers after 60 s)


async def _refuse_item_writes(database_url: str) -> None:
    conn = await asyncpg.connect(dsn(database_url))
    try:
        await conn.execute(
            "CREATE FUNCTION longops_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER longops_test_disk_full BEFORE UPDATE OF response ON items "
            "FOR EACH ROW EXECUTE FUNCTION longops_test_disk_full()"
        )
    finally:
        await conn.close()


async def test_a_database_that_refuses_writes_is_retried_at_a_growing_backoff(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        if database_url.startswith("sqlite"):
            disk = stack.enter_context(small_disk(tmp_path / "small", "4m"))
            database_url = f"sqlite:///{disk / 'longops.db'}"
        settings = make_settings(
            database_url=database_url, poll_interval_seconds=0.05, poll_jitter_seconds=0.0
        )
        async with app_in_loop(settings) as app, httpx.AsyncClient(base_url=app.url, timeout=30) as client:
            state = app.app.state.longops
            simulator = str(state.engine._registry.get("simulator")._client.base_url)
            created = await client.post(
                "/v1/batches", json={"provider": "simulator", "requests": requests_for("a", "b")}
            )
            assert created.status_code == 201
            await wait_for_async(
                lambda: _running(client, created.json()["id"]), 30, "the batch to be submitted"
            )
            if database_url.startswith("sqlite"):
                free = shutil.disk_usage(disk).free
                (disk / "filler").write_bytes(b"\0" * free)  # not a byte left for the database
            else:
                await _refuse_item_writes(database_url)
            async with httpx.AsyncClient(base_url=simulator, timeout=30) as sim:
                seen: list[float] = []  # when each results download was first observed

                async def downloads() -> bool:
                    calls = (await sim.get("/_simulator/stats")).json()["calls"]["results"]
                    seen.extend([time.monotonic()] * (calls - len(seen)))
                    return len(seen) >= 4

                await wait_for_async(downloads, 60, "four attempts", interval=0.02)
            gaps = [later - earlier for earlier, later in itertools.pairwise(seen)]
            # The third retry waits at least 4 × the first one's 1 s (less the observation step), where
            # a fixed backoff downloaded the results again every second.
            assert gaps[2] >= 4 * 1.0 - 0.05, gaps
            if database_url.startswith("sqlite"):
                (disk / "filler").unlink()
            assert (await client.get(f"/v1/batches/{created.json()['id']}")).json()["status"] == "running"


async def _running(client: httpx.AsyncClient, batch_id: str) -> bool:
    return bool((await client.get(f"/v1/batches/{batch_id}")).json()["status"] == "running")
