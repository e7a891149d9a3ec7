"""Opening the configured database for a process or a command, with failures as one readable line.

Every process and every server-side command opens its database through :func:`open_upgraded` (or
turns a failure into :class:`DatabaseUnavailable` with :func:`unavailable`), so a wrong, missing or
unreachable database always ends the same way: one sentence that names ``LONGOPS_DATABASE_URL``
(its password hidden), what went wrong in the driver's own words, and what to do. Invariant: the
message never carries a password and never spans more than one line.
"""

from __future__ import annotations

import sqlite3

import asyncpg
from alembic.util.exc import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.exc import DBAPIError as SQLAlchemyDBAPIError

from longops.store.db import Database, UnsupportedDatabase, open_database
from longops.store.migrate import upgrade_database

SETTING = "LONGOPS_DATABASE_URL"


class DatabaseUnavailable(RuntimeError):
    """The configured database cannot be opened or brought up to date; the message says why."""


def shown_url(url: str) -> str:
    """The URL as it may be printed: its password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url if "@" not in url else "…@" + url.rsplit("@", 1)[1]


def _reason(exc: BaseException) -> str:
    """The driver's own words for ``exc``, on one line, without SQLAlchemy's wrapping."""
    if isinstance(exc, SQLAlchemyDBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(text.split("\n")[0].split()) or type(exc).__name__


def _advice(exc: BaseException, url: str) -> str:
    if isinstance(exc, UnsupportedDatabase | ArgumentError):
        return f"set {SETTING} to sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
    if isinstance(exc, CommandError):
        return "the database was migrated by a newer longops: upgrade longops, or use another database"
    if url.startswith("sqlite"):
        return f"check that the file's directory exists and is writable, or set {SETTING}"
    return f"check that the database server runs and accepts this user and database, or set {SETTING}"


def unavailable(exc: BaseException, url: str) -> DatabaseUnavailable:
    """The one-line error for ``exc``, raised while opening or migrating the database at ``url``."""
    return DatabaseUnavailable(
        f"cannot use the database {SETTING}={shown_url(url)}: {_reason(exc)}; {_advice(exc, url)}"
    )


#: What opening or migrating a database raises when the database (not longops) is the problem; asyncpg
#: raises its own errors (refused connection, bad password) on connect, before SQLAlchemy wraps them.
OPEN_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    UnsupportedDatabase,
    CommandError,
    OSError,
    TimeoutError,
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


async def open_upgraded(url: str) -> Database:
    """The database at ``url``, migrated to the latest schema; :class:`DatabaseUnavailable` if not."""
    try:
        db = open_database(url)
    except OPEN_ERRORS as exc:
        raise unavailable(exc, url) from exc
    try:
        await upgrade_database(db)
    except OPEN_ERRORS as exc:
        await db.dispose()
        raise unavailable(exc, url) from exc
    return db
