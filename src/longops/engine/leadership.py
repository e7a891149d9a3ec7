"""Who may run the leader-only loops (submitter, poller).

PostgreSQL: a session-level ``pg_try_advisory_lock`` held on a dedicated connection opened outside
the pool (a pooled session would give the lock back at the first commit or reuse), for as long as
the process leads. The connection is checked every cycle; when it is lost the caller stops its
leader-only loops at once. The server released the lock with the session, so another instance can
take over; anything the old leader still writes is a compare-and-set that the new one's progress
makes fail (see the README, "Leadership and fencing").

SQLite: one engine per database file, guarded by an exclusive ``flock`` on a file beside it. A
second engine refuses to start; API-only processes may share the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import IO, Protocol

import asyncpg
from sqlalchemy.engine import make_url

from longops.domain.lock_keys import advisory_lock_key

log = logging.getLogger(__name__)

# Shown in pg_stat_activity, so an operator can see (and tests can find) the lock connection.
LEADER_APPLICATION_NAME = "longops-leader"


class EngineSlotError(RuntimeError):
    """This process cannot run the engine on a SQLite file; the message says why, in one line."""


class EngineAlreadyRunning(EngineSlotError):
    pass


class EngineLockUnavailable(EngineSlotError):
    """The lock file beside the database cannot be opened (permissions, a directory in its place)."""


class Leadership(Protocol):
    async def try_acquire(self) -> bool: ...

    async def still_leader(self) -> bool: ...

    async def release(self) -> None: ...


class SQLiteLeadership:
    def __init__(self, database_file: Path) -> None:
        self._path = database_file.with_name(database_file.name + ".engine.lock")
        self._file: IO[str] | None = None

    async def try_acquire(self) -> bool:
        if self._file is not None:
            return True
        try:
            handle = self._path.open("a+")
        except OSError as exc:
            raise EngineLockUnavailable(
                f"cannot open the engine's lock file {self._path}: {exc.strerror or exc}; the engine "
                "needs to create it beside the SQLite database (check that directory's permissions)"
            ) from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise EngineAlreadyRunning(
                f"an engine is already running on this SQLite database ({holder} holds {self._path}); "
                "SQLite allows one engine per database file: stop it, run this one with --no-engine, "
                "or use PostgreSQL for several instances"
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    async def still_leader(self) -> bool:
        return self._file is not None

    async def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def asyncpg_dsn(url: str) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class PostgresLeadership:
    def __init__(self, url: str, lock_name: str, *, check_timeout: float = 5.0) -> None:
        self._dsn = asyncpg_dsn(url)
        self._key = advisory_lock_key(lock_name)
        self._check_timeout = check_timeout
        self._conn: asyncpg.Connection | None = None

    async def try_acquire(self) -> bool:
        if self._conn is not None and not self._conn.is_closed():
            return True
        conn = await asyncpg.connect(
            self._dsn,
            timeout=self._check_timeout,
            server_settings={"application_name": LEADER_APPLICATION_NAME},
        )
        try:
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key)
        except BaseException:
            await conn.close()
            raise
        if not got:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def still_leader(self) -> bool:
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            held = await asyncio.wait_for(
                conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND granted AND ((classid::bigint << 32) | objid::bigint) = $1",
                    self._key,
                ),
                self._check_timeout,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("leader connection lost: %s", exc)
            await self._drop()
            return False
        if not held:
            await self._drop()
        return bool(held)

    async def release(self) -> None:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                await asyncio.wait_for(
                    conn.execute("SELECT pg_advisory_unlock($1)", self._key), self._check_timeout
                )
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
