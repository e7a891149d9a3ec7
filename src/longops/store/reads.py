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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.util import greenlet_spawn

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
        pooled = await db.engine.raw_connection()
        try:
            driver: Any = pooled.driver_connection
            if db.is_postgres:
                records = await driver.fetch(compiled.sql, *arguments)
            else:
                records = list(await driver.execute_fetchall(compiled.sql, arguments))
        except BaseException as exc:
            await greenlet_spawn(pooled.invalidate, exc if isinstance(exc, Exception) else None)
            raise
        finally:
            await greenlet_spawn(pooled.close)  # back to the pool (its reset may need to await)
        return compiled.rows(records)

    async def first(self, db: Database, **params: Any) -> dict[str, Any] | None:
        rows = await self.all(db, **params)
        return rows[0] if rows else None
