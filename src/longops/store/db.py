"""Database engines for SQLite (embedded default) and PostgreSQL.

SQLite notes: the file runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing with "database is locked"
when a read transaction tries to upgrade. Reads use a plain deferred ``BEGIN`` and do not block
writers (WAL). The one-statement reads of ``store.reads`` run on a connection of their own, inline
(``SQLiteReader``), closed by :meth:`Database.dispose`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from longops.store.reads import SQLiteReader


class UnsupportedDatabase(ValueError):
    pass


def async_url(url: str) -> URL:
    """``sqlite:///x.db`` / ``postgresql://…`` as the async-driver URL SQLAlchemy needs."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise UnsupportedDatabase(
        f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:// or postgresql://"
    )


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases or in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).resolve()


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below emit BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


Fence = Callable[[AsyncConnection], Awaitable[None]]


@dataclass(frozen=True)
class Database:
    """An engine plus, for a leader's view of it, a fence run first in every write transaction."""

    url: str
    engine: AsyncEngine
    fence: Fence | None = None
    sqlite_reader: SQLiteReader | None = None  # a SQLite file's inline reads (store.reads.DriverQuery)

    def fenced(self, fence: Fence) -> Database:
        """The same database whose write transactions first run ``fence`` (which may raise)."""
        return replace(self, fence=fence)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on success, rolled back on any exception."""
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
            async with conn.begin():
                if self.fence is not None:
                    await self.fence(conn)
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    async def dispose(self) -> None:
        if self.sqlite_reader is not None:
            self.sqlite_reader.close()
        await self.engine.dispose()


async def defer_commit_flush(conn: AsyncConnection) -> None:
    """Let this transaction's COMMIT return before its WAL is flushed to disk (PostgreSQL only).

    For transactions whose loss in a database crash is harmless because they are redone anyway:
    the poller's intermediate ingest chunks, which are idempotent and re-read from the provider
    until the synchronous transaction that completes the provider batch. WAL is flushed in order,
    so once that one has committed, every chunk before it is durable too. SQLite (WAL mode,
    ``synchronous=NORMAL``) never waits for a flush at commit.
    """
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


# A pooled PostgreSQL connection idle for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 5.0


def _install_idle_ping(engine: AsyncEngine) -> None:
    """``pool_pre_ping``, but only for connections that sat idle in the pool.

    SQLAlchemy's pre-ping costs three round trips on asyncpg (BEGIN, ``;``, ROLLBACK) at every
    checkout, that is at every transaction: more than the poller's whole completion transaction
    of a small batch. A connection checked in moments ago is as alive as a ping would show; one
    that idled (the server may have restarted, a proxy may have dropped it) is pinged, and a failed
    ping makes the pool discard it and hand out another, as ``pool_pre_ping`` would.
    """
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return  # just connected, or just used
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc


def sqlite_json(value: Any) -> str | bytes:
    """JSON for a SQLite JSON column, which SQLite gives numeric affinity: a bare number stored as
    text would be converted to an INTEGER or REAL, so ``2**70`` (beyond 64 bits) came back as a
    rounded float. A number is stored as a BLOB of its JSON text, which no affinity converts (and
    which reads back through the same JSON decoder); everything else stays text."""
    text = json.dumps(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return text.encode()
    return text


def open_database(url: str, *, pool_size: int = 24) -> Database:
    """``pool_size`` covers the engine's concurrent work (``POLL_CONCURRENCY`` 16 by default, plus the
    API and the other loops). No overflow: under asyncio, overflow connections were closed as soon
    as they were returned while other requests still waited, so a read load opened hundreds of
    PostgreSQL connections per second (bench/README.md, API reads); waiting for a pooled one is
    cheaper."""
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            target, poolclass=NullPool if path is None else None, json_serializer=sqlite_json
        )
        _install_sqlite_hooks(engine)
        return Database(url=url, engine=engine, sqlite_reader=None if path is None else SQLiteReader(path))
    engine = create_async_engine(target, pool_size=pool_size, max_overflow=0, pool_recycle=1800)
    _install_idle_ping(engine)
    return Database(url=url, engine=engine)
