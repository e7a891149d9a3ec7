"""Shared fixtures: both database backends, the simulator, and settings for a test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from longops.settings import Settings
from tests.support.postgres import fresh_database, postgres_server


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'longops.db'}"
        return
    server_url = request.getfixturevalue("postgres_server_url")
    with fresh_database(server_url) as url:
        yield url


@pytest.fixture
def make_settings(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Settings for this test's database with fast test cadences; keyword overrides win."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": database_url,
            "poll_interval_seconds": 0.2,
            "poll_jitter_seconds": 0.05,
            "submit_interval_seconds": 0.1,
            "leader_retry_seconds": 0.5,
            "simulator_state_dir": str(tmp_path / "simulator"),
            "simulator_processing_seconds": 0.0,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make
