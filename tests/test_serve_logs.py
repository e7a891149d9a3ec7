"""What ``longops serve`` and ``longops engine`` say while they start, read from real processes: the
database they opened, "serving on …" only once the port answers, uvicorn's lines once each, and a
standby that says it is one."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.postgres import fresh_database
from tests.support.processes import cluster, free_port, wait_for


def test_serve_says_where_its_database_is_and_serves_once_it_says_so(tmp_path: Path) -> None:
    port = free_port()
    with cluster(tmp_path) as group:  # the default database: ./longops.db in the working directory
        server = group.start("serve", "serve", "--port", str(port))
        wait_for(lambda: "longops serving on" in server.log(), 60, "the serving line")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200  # at once, no retry
        log = server.log()
        assert f"database: SQLite file {tmp_path / 'longops.db'}" in log
        assert log.count(f"longops serving on http://127.0.0.1:{port} ") == 1
        assert log.count("Started server process") == 1  # not again for the bundled simulator
        assert log.count("Application startup complete") == 1
        assert "INFO:     " not in log  # uvicorn's lines in longops's format, not its own as well
        assert "Context impl" not in log
        server.terminate()  # SIGTERM: uvicorn shuts down, then re-raises the signal
        assert server.log().count("Finished server process") == 1


def test_a_standby_says_so(postgres_server_url: str, tmp_path: Path) -> None:
    with (
        fresh_database(postgres_server_url) as url,
        cluster(tmp_path, LONGOPS_DATABASE_URL=url, LONGOPS_LEADER_RETRY_SECONDS="0.5") as group,
    ):
        first = group.start("first", "engine")
        wait_for(lambda: "is now the leader" in first.log(), 60, "the first engine to lead")
        second = group.start("second", "engine")
        wait_for(lambda: "is standby" in second.log(), 60, "the second engine to say it is standby")
        line = next(line for line in second.log().splitlines() if "is standby" in line)
        assert "another instance leads (lock 'longops-leader')" in line
        assert "every 0.5 s (LONGOPS_LEADER_RETRY_SECONDS)" in line
        assert second.log().count("is standby") == 1  # once, not at every retry
