"""Several engine processes on one PostgreSQL; one engine per SQLite file (real processes).

Leadership is observed through the ``leader_terms`` table (every term with its instance, start and
end), the simulator's own call counts (creates per batch) and the items themselves.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from longops.engine.leadership import LEADER_APPLICATION_NAME
from tests.support.harness import requests_for
from tests.support.leadership import current_leader_pid, query, terms
from tests.support.postgres import database_from_template
from tests.support.processes import Cluster, cluster, wait_for

ENGINE_ENV = {
    "LONGOPS_POLL_INTERVAL_SECONDS": "0.3",
    "LONGOPS_POLL_JITTER_SECONDS": "0.1",
    "LONGOPS_SUBMIT_INTERVAL_SECONDS": "0.2",
    "LONGOPS_LEADER_RETRY_SECONDS": "0.5",
    "LONGOPS_ANTHROPIC_MAX_REQUESTS": "2",
    "LONGOPS_LOG_LEVEL": "INFO",
    # A create cut off by a kill is reconciled once it can no longer be in flight (timeout + skew).
    "LONGOPS_PROVIDER_TIMEOUT_SECONDS": "5",
    "LONGOPS_PROVIDER_CLOCK_SKEW_SECONDS": "0.5",
}


@pytest.fixture
def pg_url(postgres_server_url: str, postgres_template_url: str) -> Iterator[str]:
    with database_from_template(postgres_server_url, postgres_template_url) as url:
        yield url


def assert_terms_never_overlap(rows: list[asyncpg.Record], *, ended_by_their_leaders: bool = False) -> None:
    """Each term ended no later than the next one began.

    A term closed by its successor (its leader was deposed or died) ends exactly when the next one
    begins: ``begin_term`` writes both times from one reading of the successor's clock, so for such
    a term this comparison holds by construction; that its leader's writes stopped there is the
    fence's job, shown in tests/test_leader_fence.py. A term its leader ended itself (a clean stop,
    ``ended_by_their_leaders``) carries that leader's own reading, taken before it let go of the
    lock: it must come strictly before the successor's start. Equal times there mean the successor
    had to close the term, that is the leader gave up the lock before it recorded its end.
    """
    for before, after in itertools.pairwise(rows):
        assert before["released_at"] is not None, f"term {before['term']} was never closed"
        assert before["released_at"] <= after["acquired_at"], (
            f"terms {before['term']} and {after['term']} overlap"
        )
        if ended_by_their_leaders:
            assert before["released_at"] < after["acquired_at"], (
                f"term {before['term']} was closed by its successor, not ended by its leader"
            )


def create_batches(api: str, count: int, size: int) -> list[str]:
    ids = []
    with httpx.Client(base_url=api, timeout=30) as client:
        for _ in range(count):
            texts = [f"question {i}" for i in range(size)]
            response = client.post(
                "/v1/batches", json={"provider": "simulator", "requests": requests_for(*texts)}
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
    return ids


def statuses(api: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=api, timeout=30) as client:
        return {batch_id: client.get(f"/v1/batches/{batch_id}").json() for batch_id in ids}


def all_completed(api: str, ids: list[str]) -> bool:
    return all(b["status"] == "completed" for b in statuses(api, ids).values())


def assert_exactly_once(url: str, simulator: str, api: str, ids: list[str]) -> None:
    """Every provider batch created once at the provider; every item final once, counted once."""
    pbs = query(url, "SELECT provider_batch_id FROM provider_batches")
    stats = httpx.get(simulator + "/_simulator/stats").json()
    assert stats["calls"]["create"] == len(pbs) == stats["batches"]
    assert len({pb["provider_batch_id"] for pb in pbs}) == len(pbs)
    rows = query(
        url, "SELECT count(*) AS n, count(DISTINCT (job_id, custom_id)) AS d, max(attempts) AS a FROM items"
    )
    assert rows[0]["n"] == rows[0]["d"] and rows[0]["a"] == 1
    for batch in statuses(api, ids).values():
        counts = batch["request_counts"]
        assert counts["succeeded"] == counts["total"] and counts["processing"] == 0


@pytest.fixture
def group(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    with cluster(tmp_path, LONGOPS_DATABASE_URL=pg_url, **ENGINE_ENV) as running:
        yield running


def leader_gauge(url: str) -> float:
    metrics = httpx.get(url + "/metrics").text
    (line,) = [line for line in metrics.splitlines() if line.startswith("longops_leader ")]
    return float(line.split()[1])


def test_three_instances_one_leader_all_work_once(group: Cluster, pg_url: str) -> None:
    simulator = group.start_simulator("--processing-seconds", "1")
    servers = {group.start_server(f"serve{i}"): group.processes[-1] for i in range(3)}
    wait_for(lambda: current_leader_pid(pg_url), 30, "a leader")
    api = next(iter(servers))
    ids = create_batches(api, count=12, size=5)
    wait_for(lambda: all_completed(api, ids), 90, "all batches to complete")
    assert all(process.alive() for process in servers.values())
    rows = terms(pg_url)
    assert len(rows) == 1, "one election, no churn"
    leader_pid = current_leader_pid(pg_url)
    roles = {process.pid: httpx.get(url + "/readyz").json()["role"] for url, process in servers.items()}
    assert sorted(roles.values()) == ["leader", "standby", "standby"]
    assert roles[leader_pid] == "leader"
    gauges = {process.pid: leader_gauge(url) for url, process in servers.items()}
    assert gauges == {pid: (1.0 if pid == leader_pid else 0.0) for pid in gauges}
    pollers = [p.pid for p in servers.values() if "poll cycle:" in p.log()]
    assert pollers == [leader_pid], "only the leader polls"
    assert_exactly_once(pg_url, simulator, api, ids)


def test_sigkill_leader_mid_ingest_fails_over_exactly_once(group: Cluster, pg_url: str) -> None:
    group.env["LONGOPS_ANTHROPIC_MAX_REQUESTS"] = "100000"
    group.env["LONGOPS_INGEST_CHUNK_SIZE"] = "50"
    simulator = group.start_simulator("--processing-seconds", "0")
    api = group.start_server("api", "--no-engine")
    engines = {e.pid: e for e in (group.start(f"engine{i}", "engine") for i in range(3))}
    wait_for(lambda: current_leader_pid(pg_url), 30, "a leader")
    ids = create_batches(api, count=3, size=3000)

    def ingest_started() -> bool:
        rows = query(pg_url, "SELECT count(*) AS n FROM items WHERE status = 'succeeded'")
        return 0 < rows[0]["n"] < 9000

    wait_for(ingest_started, 60, "ingestion to start", interval=0.01)
    old = current_leader_pid(pg_url)
    assert old is not None
    engines[old].kill()
    new = wait_for(lambda: (pid := current_leader_pid(pg_url)) != old and pid, 30, "a new leader")
    assert new in engines  # how fast: bench/failover.py measures it (no wall-clock limits in tests)
    wait_for(lambda: all_completed(api, ids), 120, "all batches to complete after failover")
    assert_exactly_once(pg_url, simulator, api, ids)


def test_terminated_leader_connection_steps_down_without_overlap(group: Cluster, pg_url: str) -> None:
    simulator = group.start_simulator("--processing-seconds", "2")
    api = group.start_server("api", "--no-engine")
    engines = {e.pid: e for e in (group.start(f"engine{i}", "engine") for i in range(2))}
    wait_for(lambda: current_leader_pid(pg_url), 30, "a leader")
    ids = create_batches(api, count=6, size=4)
    old = current_leader_pid(pg_url)
    terminated = query(
        pg_url,
        "SELECT pg_terminate_backend(a.pid) AS ok FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
        "WHERE a.application_name = $1 AND a.datname = current_database() "
        "AND l.locktype = 'advisory' AND l.granted",
        LEADER_APPLICATION_NAME,
    )
    assert [row["ok"] for row in terminated] == [True]
    wait_for(lambda: "leadership lost" in engines[old].log(), 30, "the old leader to step down")
    wait_for(lambda: len(terms(pg_url)) >= 2 and current_leader_pid(pg_url), 30, "a new term")
    assert engines[old].alive(), "a deposed leader stays up as a standby"
    wait_for(lambda: all_completed(api, ids), 90, "all batches to complete")
    assert_terms_never_overlap(terms(pg_url))
    assert_exactly_once(pg_url, simulator, api, ids)


def test_sigterm_releases_leadership_promptly(group: Cluster, pg_url: str) -> None:
    group.start_simulator()
    engines = {e.pid: e for e in (group.start(f"engine{i}", "engine") for i in range(2))}
    old = wait_for(lambda: current_leader_pid(pg_url), 30, "a leader")
    assert engines[old].terminate(timeout=30) == 0  # exits, cleanly, within the bound (else TimeoutExpired)
    (old_term,) = [row for row in terms(pg_url) if row["instance"].split(":")[1] == str(old)]
    assert old_term["released_at"] is not None
    wait_for(lambda: current_leader_pid(pg_url) not in (None, old), 10, "the standby to take over")
    assert_terms_never_overlap(terms(pg_url), ended_by_their_leaders=True)


def test_second_engine_on_one_sqlite_file_refuses(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    with cluster(tmp_path, LONGOPS_DATABASE_URL=url, **ENGINE_ENV) as group:
        group.start_simulator()
        first = group.start("first", "engine")
        wait_for(lambda: "now the leader" in first.log(), 30, "the first engine to lead")
        second = subprocess.run(
            [sys.executable, "-m", "longops", "engine"],
            env={**os.environ, **group.env},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert second.returncode != 0
        assert "already running on this SQLite database" in second.stderr
        assert first.alive()
        api = group.start_server("api", "--no-engine")
        assert httpx.get(api + "/readyz").json()["role"] == "api"
        first.popen.send_signal(signal.SIGTERM)
        assert first.popen.wait(30) == 0


@pytest.mark.parametrize("command", [["engine"], ["serve", "--port", "0"]])
def test_unopenable_engine_lock_file_is_a_one_line_error(tmp_path: Path, command: list[str]) -> None:
    """The engine's lock file beside a SQLite database cannot be created (here a directory holds its
    name; elsewhere, a directory without write permission): both commands stop with one line naming
    the file, not a traceback, and nothing listens."""
    (tmp_path / "one.db.engine.lock").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "longops", *command],
        env={**os.environ, "LONGOPS_DATABASE_URL": f"sqlite:///{tmp_path / 'one.db'}", **ENGINE_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert f"cannot open the engine's lock file {tmp_path / 'one.db.engine.lock'}" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_stopped_mid_batch_and_started_again_completes(tmp_path: Path, database_url: str) -> None:
    """Both backends: `longops serve` is killed while a batch runs; a restarted server finishes it."""
    with cluster(tmp_path, LONGOPS_DATABASE_URL=database_url, **ENGINE_ENV) as group:
        simulator = group.start_simulator("--processing-seconds", "3")
        api = group.start_server("first")
        (batch_id,) = create_batches(api, count=1, size=6)
        wait_for(lambda: statuses(api, [batch_id])[batch_id]["status"] == "running", 30, "the batch to run")
        group.processes[-1].kill()
        api = group.start_server("second")
        wait_for(lambda: all_completed(api, [batch_id]), 60, "the batch to complete after restart")
        stats = httpx.get(simulator + "/_simulator/stats").json()
        assert stats["calls"]["create"] == stats["batches"] == 3
        results = httpx.get(f"{api}/v1/batches/{batch_id}/results").text.splitlines()
        assert len(results) == 6
