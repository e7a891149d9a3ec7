"""Shared fixtures: both database backends, the simulator, and settings for a test.

``database_url`` is a migrated database (PostgreSQL: a clone of one template migrated per session;
SQLite: a copy of one migrated file), so a test starts at the latest schema without running the
migrations; ``empty_database_url`` is one with no schema, for the tests of the migrations themselves.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from longops.settings import Settings
from longops.store.db import Database, open_database
from longops.store.migrate import upgrade
from tests.support.postgres import database_from_template, fresh_database, migrated_template, postgres_server


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_template_url(postgres_server_url: str) -> Iterator[str]:
    with migrated_template(postgres_server_url) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "longops.db"
    upgrade(f"sqlite:///{path}")  # closed on return, its WAL checkpointed into the file
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every test that takes this runs once on SQLite and once on PostgreSQL, on a migrated database."""
    if request.param == "sqlite":
        path = tmp_path / "longops.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server_url = request.getfixturevalue("postgres_server_url")
    with database_from_template(server_url, request.getfixturevalue("postgres_template_url")) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all, on each backend (the migrations' own tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with fresh_database(request.getfixturevalue("postgres_server_url")) as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The test's (migrated) database, opened."""
    database = open_database(database_url)
    try:
        yield database
    finally:
        await database.dispose()


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
