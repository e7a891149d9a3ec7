"""Leadership terms: a history of who led, and the fence that keeps a deposed leader's writes out.

A new leader ends every open term of its lock name (``released_at``) and starts its own, in one
transaction. A leader's write transactions first take a ``FOR SHARE`` lock on its own open term row.
The two conflict: a new term cannot start while an old leader's write transaction is in flight, and
once it has started, every later write transaction of the old leader finds its term released and
aborts with :class:`Deposed`. So the effects of two terms never overlap.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.store.db import Database, Fence
from longops.store.tables import leader_terms


class Deposed(RuntimeError):
    """This instance's leadership term has ended; its leader-only work must stop."""


async def begin_term(db: Database, lock_name: str, instance: str, now: datetime) -> int:
    async with db.write() as conn:
        await conn.execute(
            update(leader_terms)
            .where(leader_terms.c.lock_name == lock_name, leader_terms.c.released_at.is_(None))
            .values(released_at=now)
        )
        result = await conn.execute(
            insert(leader_terms)
            .values(lock_name=lock_name, instance=instance, acquired_at=now)
            .returning(leader_terms.c.term)
        )
        return int(result.scalar_one())


async def end_term(db: Database, term: int, now: datetime) -> None:
    async with db.write() as conn:
        await conn.execute(
            update(leader_terms)
            .where(leader_terms.c.term == term, leader_terms.c.released_at.is_(None))
            .values(released_at=now)
        )


def term_fence(term: int) -> Fence:
    async def check(conn: AsyncConnection) -> None:
        query = select(leader_terms.c.term).where(
            leader_terms.c.term == term, leader_terms.c.released_at.is_(None)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(read=True)
        if (await conn.execute(query)).first() is None:
            raise Deposed(f"leadership term {term} has ended")

    return check
