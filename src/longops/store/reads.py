"""The hottest reads, run straight on the database driver: one statement, no SQLAlchemy execution.

Every API request looks up its key, and ``GET /v1/batches/{id}`` is what clients poll. Through
SQLAlchemy's execution layer each such one-row read costs about 0.3 ms of CPU on the development
machine (connection and transaction objects, the greenlet bridge, result wrapping, and on SQLite
about ten hops to aiosqlite's thread for BEGIN, the cursor, the fetch and COMMIT), several times
the driver's own work. A :class:`DriverQuery` keeps everything else of SQLAlchemy: the statement
is a SQLAlchemy ``Select``, compiled by the engine's own dialect (once, then reused), and every
result column goes through the same result processor SQLAlchemy would apply (UTC datetimes, JSON);
the connection comes from, and returns to, the engine's pool. Only the execution is direct: one
``fetch`` on asyncpg, one ``execute_fetchall`` (one thread hop) on aiosqlite.

A single statement is its own consistent snapshot on both databases, so no transaction is opened
around it: asyncpg runs it in autocommit, and the SQLite connections of ``store.db`` are in
autocommit mode unless SQLAlchemy begins a transaction. Only for one read-only statement with
plain parameter values (strings, numbers): their bind processors are applied, but nothing else of
SQLAlchemy's parameter handling (no expanding ``IN``).

A driver error invalidates the pooled connection (it is closed, the pool opens a fresh one), as
SQLAlchemy does on a disconnect, and is raised as the driver's own exception. These statements do
not pass through SQLAlchemy's execution events (``before_cursor_execute``, ``echo``): the pool's
own events (checkout, checkin) still run.

On a SQLite file, a :class:`DriverQuery` does not use the pool at all but the database's
:class:`SQLiteReader`: one plain ``sqlite3`` connection executed inline, on the event loop. See
that class for why this departs from aiosqlite, and why the answer is still as fresh.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Select
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.util import await_, greenlet_spawn

if TYPE_CHECKING:  # store.db imports this module for SQLiteReader
    from longops.store.db import Database

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    binds: tuple[tuple[str, Any, Processor | None], ...]  # (name, default value, bind processor)
    keys: tuple[str, ...]
    processors: tuple[Processor | None, ...]

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        values = []
        for name, default, process in self.binds:
            value = params.get(name, default)
            values.append(process(value) if process is not None else value)
        return values

    def rows(self, records: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        pairs = tuple(zip(self.keys, self.processors, strict=True))
        return [
            {
                key: process(value) if process is not None else value
                for (key, process), value in zip(pairs, record, strict=True)
            }
            for record in records
        ]


class SQLiteReader:
    """One read-only ``sqlite3`` connection to a SQLite file, for :class:`DriverQuery`, run inline.

    A deliberate departure from aiosqlite, for these reads only. aiosqlite runs every call in the
    connection's own thread and wakes the event loop with the answer: for a one-row lookup on a
    primary key or unique index, which SQLite answers in microseconds from its page cache, the two
    thread switches (and the GIL changing hands twice) cost several times the read, and a pooled
    connection adds a third switch for the ROLLBACK of its reset at check-in. Executed inline, the
    read costs what it costs in SQLite. Every other statement (writes, transactions, the engine's
    reads) still goes through SQLAlchemy and aiosqlite.

    Fresh data: the connection is in autocommit (``isolation_level=None``) and each statement is read
    to its end (``fetchall``), so no read transaction outlives its statement; in WAL mode each
    statement then reads the last transaction committed before it started, by any connection or
    process, as a pooled connection would. It does not block writers (WAL), and ``query_only``
    makes it refuse any write. ``busy_timeout`` is 0 so that it can never stall the event loop
    waiting for a lock (in WAL mode a reader waits only in rare cases, such as another connection
    recovering the WAL after a crash); :class:`DriverQuery` then runs the read on the pool instead.

    The connection opens on first use and closes with the :class:`~longops.store.db.Database`
    (``dispose``); a use after that opens it again, as the engine's pool does. A lock makes it safe
    if the database is shared by event loops in several threads (uncontended within one loop).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def fetchall(self, sql: str, arguments: Sequence[Any]) -> list[Any]:
        """The rows of one statement; raises ``sqlite3.OperationalError`` if the database is busy."""
        with self._lock:
            if self._connection is None:
                self._connection = self._connect()
            return self._connection.execute(sql, arguments).fetchall()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA query_only=ON")
            connection.execute("PRAGMA busy_timeout=0")
        except BaseException:
            connection.close()
            raise
        return connection

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class DriverQuery:
    """A read-only SELECT, compiled by SQLAlchemy for each dialect it meets, executed by the driver."""

    def __init__(self, statement: Select[Any]) -> None:
        self._statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is not None:
            return compiled
        result = self._statement.compile(dialect=dialect)
        names = result.positiontup
        if names is None or result.literal_execute_params or result.post_compile_params:
            raise ValueError("DriverQuery needs a positional paramstyle and plain bind parameters")
        defaults = result.params
        binds = tuple(
            (name, defaults.get(name), result.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in names
        )
        columns = list(self._statement.selected_columns)
        compiled = _Compiled(
            sql=result.string,
            binds=binds,
            keys=tuple(str(column.key) for column in columns),
            processors=tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
            ),
        )
        self._compiled[dialect.name] = compiled
        return compiled

    async def all(self, db: Database, **params: Any) -> list[dict[str, Any]]:
        """Every row, as ``{column key: value}`` with SQLAlchemy's result processing applied."""
        compiled = self._compile(db.engine.dialect)
        arguments = compiled.arguments(params)
        if db.sqlite_reader is not None:
            try:
                return compiled.rows(db.sqlite_reader.fetchall(compiled.sql, arguments))
            except sqlite3.OperationalError:
                pass  # busy (or any other failure): the pooled connection waits, and raises if it persists
        async with _pool_gate():
            records = await greenlet_spawn(
                _fetch_pooled, db.engine.sync_engine, db.is_postgres, compiled.sql, arguments
            )
        return compiled.rows(records)

    async def first(self, db: Database, **params: Any) -> dict[str, Any] | None:
        rows = await self.all(db, **params)
        return rows[0] if rows else None


# Point reads waiting for a pooled connection at once, per event loop. SQLAlchemy's pool is not fair
# to waiters: a connection returned while requests wait can go to a request that has just arrived,
# and under load some requests wait again and again (PostgreSQL, 64 clients on a pool of 24: the
# app's own p99 was 133–248 ms). An asyncio.Semaphore is first come, first served, and with fewer
# point reads admitted than the pool holds, they rarely wait in the pool's queue at all.
_POOL_GATE_SIZE = 16
_pool_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _pool_gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _pool_gates.get(loop)
    if gate is None:
        gate = _pool_gates[loop] = asyncio.Semaphore(_POOL_GATE_SIZE)
    return gate


def _fetch_pooled(engine: Engine, is_postgres: bool, sql: str, arguments: list[Any]) -> Sequence[Any]:
    """One statement on a connection of the engine's pool, inside a single ``greenlet_spawn``.

    The pool's checkout and check-in are synchronous code that may have to await (open a connection,
    wait for a free one, the ROLLBACK of the reset); run from a greenlet, they and the driver's call
    (``await_``) share one greenlet, where checking out and checking in through ``AsyncEngine`` costs
    one each (about 35 µs of CPU more per read on PostgreSQL).
    """
    pooled = engine.raw_connection()
    try:
        driver: Any = pooled.driver_connection
        if is_postgres:
            return cast(Sequence[Any], await_(driver.fetch(sql, *arguments)))
        return list(await_(driver.execute_fetchall(sql, arguments)))
    except BaseException as exc:
        pooled.invalidate(exc if isinstance(exc, Exception) else None)
        raise
    finally:
        pooled.close()  # back to the pool
