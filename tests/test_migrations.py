"""The migrations themselves, from an empty database (every other test starts from a migrated copy).

``longops migrate`` runs as real processes, several at once on one database: one migrates under the
lock and the others then find nothing to do. The result must be exactly the schema of
``store/tables.py`` at the newest revision, and that is also what every test's database starts from.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

import longops.store.migrations
from longops.store.db import open_database
from longops.store.tables import jobs, metadata
from longops.store.webhook_tables import webhook_events

HEAD = ScriptDirectory(str(Path(longops.store.migrations.__file__).parent)).get_current_head()


def _schema_state(connection: Connection) -> tuple[str | None, list[Any]]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    assert webhook_events.metadata is metadata  # its table is part of the schema compared
    return context.get_current_revision(), compare_metadata(context, metadata)


async def schema_state(url: str) -> tuple[str | None, list[Any], int]:
    """(revision, differences from tables.py, number of jobs) of the database at ``url``."""
    db = open_database(url)
    try:
        async with db.engine.connect() as conn:
            revision, differences = await conn.run_sync(_schema_state)
            count = (await conn.execute(select(func.count()).select_from(jobs))).scalar_one()
        return revision, differences, count
    finally:
        await db.dispose()


async def revision_of(url: str) -> str | None:
    """The database's schema revision (None: never migrated)."""
    db = open_database(url)
    try:
        async with db.engine.connect() as conn:
            return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    finally:
        await db.dispose()


def start_migrate(url: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "longops", "migrate"],
        env={**os.environ, "LONGOPS_DATABASE_URL": url},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_concurrent_migrate_commands_build_the_schema_once(
    empty_database_url: str, tmp_path: Path
) -> None:
    assert HEAD is not None
    assert await revision_of(empty_database_url) is None  # nothing there yet
    runs = [start_migrate(empty_database_url, tmp_path) for _ in range(3)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    assert await schema_state(empty_database_url) == (HEAD, [], 0)

    again = start_migrate(empty_database_url, tmp_path)
    output = again.communicate(timeout=120)[0]
    assert again.returncode == 0, output
    assert await schema_state(empty_database_url) == (HEAD, [], 0)


async def test_every_test_database_starts_migrated_and_empty(database_url: str) -> None:
    """The fixture's copy of the session's template: the newest schema, exactly, and no rows."""
    assert await schema_state(database_url) == (HEAD, [], 0)
