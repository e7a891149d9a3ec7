"""Recognizing a full disk, whichever layer reports it, and remembering it for ``/readyz``.

A write refused for lack of space arrives as SQLite's ``SQLITE_FULL`` ("database or disk is full"),
PostgreSQL's SQLSTATE ``53100`` (``disk_full``, asyncpg's ``DiskFullError``), or an ``OSError``
``ENOSPC``/``EDQUOT`` from a file write, each possibly wrapped by SQLAlchemy. The API answers it
as 507 ``insufficient_storage`` (nothing was written: each write is one transaction, and a partial
upload is removed) and :class:`StorageHealth` keeps the last refusal so that ``/readyz`` can say why
the instance is not ready for ``RECENT_SECONDS``; it also watches the free space of the directories
it is given (the SQLite file's, the uploads').
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

RECENT_SECONDS = 60.0
_SQLITE_FULL = 13
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
MIN_FREE_BYTES = 1024 * 1024


def _chain(exc: BaseException) -> list[BaseException]:
    chain = [exc]
    while True:
        following = chain[-1].__cause__ or chain[-1].__context__
        orig = getattr(chain[-1], "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's error
        nxt = orig if isinstance(orig, BaseException) and orig not in chain else following
        if nxt is None or nxt in chain:
            return chain
        chain.append(nxt)


def is_storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the disk under the database or the files is full."""
    for link in _chain(exc):
        if isinstance(link, asyncpg.DiskFullError) or getattr(link, "sqlstate", None) == "53100":
            return True
        if isinstance(link, sqlite3.OperationalError) and (
            getattr(link, "sqlite_errorcode", None) == _SQLITE_FULL or "database or disk is full" in str(link)
        ):
            return True
        if isinstance(link, OSError) and link.errno in _FULL_ERRNOS:
            return True
    return False


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is out of reach or busy for the moment (a connection lost
    or refused, a lock timeout) rather than anything about the statement or the data: the same
    work may succeed when retried. A full disk is not this (:func:`is_storage_full`)."""
    if is_storage_full(exc):
        return False
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))
    return isinstance(exc, (ConnectionError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError))


DATABASE_UNAVAILABLE_MESSAGE = (
    "the database is out of reach for the moment (a connection was lost, or it is busy), so nothing "
    "was written: retry shortly (the SDK does); if it persists, check LONGOPS_DATABASE_URL and /readyz"
)

STORAGE_FULL_MESSAGE = (
    "the server's storage is full, so nothing was written: free disk space (or grow the volume) "
    "on the database or LONGOPS_FILES_DIR, then retry"
)


@dataclass
class StorageHealth:
    """The last write refused for lack of space (monotonic time), and the paths watched for it."""

    watched: tuple[Path, ...] = ()
    refused_at: float | None = None

    def refused(self) -> None:
        self.refused_at = time.monotonic()

    def problem(self) -> str | None:
        """Why storage makes this instance unready, or None."""
        for path in self.watched:
            try:
                free = shutil.disk_usage(path).free
            except OSError:
                continue
            if free < MIN_FREE_BYTES:
                return f"full: {free} bytes free under {path}"
        if self.refused_at is not None and time.monotonic() - self.refused_at < RECENT_SECONDS:
            return (
                f"full: a write was refused {time.monotonic() - self.refused_at:.0f}s ago for lack of space"
            )
        return None
