"""Read leadership and work state straight from a PostgreSQL database (tests and benchmarks)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from longops.engine.leadership import asyncpg_dsn


def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def terms(url: str) -> list[asyncpg.Record]:
    return query(url, "SELECT term, instance, acquired_at, released_at FROM leader_terms ORDER BY term")


def current_leader_pid(url: str) -> int | None:
    """The pid in the instance name of the open term, if any (instances are ``host:pid:nonce``)."""
    try:
        rows = query(
            url, "SELECT instance FROM leader_terms WHERE released_at IS NULL ORDER BY term DESC LIMIT 1"
        )
    except asyncpg.UndefinedTableError:  # the engines have not migrated the database yet
        return None
    return int(rows[0]["instance"].split(":")[1]) if rows else None
