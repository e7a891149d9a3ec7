"""Schema migrations (Alembic), applied on server start and by ``longops migrate``.

Several instances may start at the same moment against one PostgreSQL: the upgrade runs under a
transaction-level advisory lock, so one migrates and the others then find nothing to do.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from longops.domain.lock_keys import advisory_lock_key
from longops.store.db import Database, open_database

_MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = advisory_lock_key("longops-migrations")


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade_on(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    command.upgrade(_alembic_config(connection), "head")


async def upgrade_database(db: Database) -> None:
    async with db.engine.connect() as conn:
        if db.is_sqlite:
            conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
        async with conn.begin():
            await conn.run_sync(_upgrade_on)


def upgrade(database_url: str) -> None:
    """Bring the database at ``database_url`` to the latest schema (the test suite's templates)."""

    async def _run() -> None:
        db = open_database(database_url)
        try:
            await upgrade_database(db)
        finally:
            await db.dispose()

    asyncio.run(_run())
