"""Dashboard sessions: opened by signing in with an API key, named by a cookie, ended by signing out.

Invariants:

* The cookie holds a random token (256 bits); the database holds only its SHA-256 (the row's id),
  so a copy of the database cannot be replayed as a cookie, and the API key is held by neither.
* A session is valid while it has not expired *and* the key it was opened with is not revoked. Both
  are checked by the one statement that reads the session on every request (no cache), so revoking
  a key ends its sessions on their very next request, on every instance.
* The organization is the key's: a session can never see more than its key could.
* Expired rows are deleted whenever a session is opened, so the table holds live sessions only.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select

from longops.store.api_keys import hash_key, is_well_formed
from longops.store.db import Database
from longops.store.tables import api_keys, ui_sessions
from longops.store.types import utcnow

SESSION_LIFETIME = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class UISession:
    org_id: str
    csrf_token: str


@dataclass(frozen=True, slots=True)
class OpenedSession:
    token: str  # what the cookie holds: shown to the browser once, stored nowhere
    session: UISession


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(db: Database, key: str, now: datetime | None = None) -> OpenedSession | None:
    """A new session for an active key; None for a malformed, unknown or revoked key."""
    if not is_well_formed(key):
        return None
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    async with db.write() as conn:
        row = (
            (
                await conn.execute(
                    select(api_keys.c.id, api_keys.c.org_id).where(
                        api_keys.c.hash == hash_key(key), api_keys.c.revoked_at.is_(None)
                    )
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        await conn.execute(delete(ui_sessions).where(ui_sessions.c.expires_at <= now))
        await conn.execute(
            insert(ui_sessions).values(
                id=_session_id(token),
                key_id=row["id"],
                csrf_token=csrf_token,
                created_at=now,
                expires_at=now + SESSION_LIFETIME,
            )
        )
    return OpenedSession(token, UISession(org_id=row["org_id"], csrf_token=csrf_token))


async def session_for_token(db: Database, token: str, now: datetime | None = None) -> UISession | None:
    """The live session a cookie names; None when unknown, expired, or its key was revoked."""
    query = (
        select(api_keys.c.org_id, ui_sessions.c.csrf_token)
        .select_from(ui_sessions.join(api_keys, api_keys.c.id == ui_sessions.c.key_id))
        .where(
            ui_sessions.c.id == _session_id(token),
            ui_sessions.c.expires_at > (now or utcnow()),
            api_keys.c.revoked_at.is_(None),
        )
    )
    async with db.read() as conn:
        row = (await conn.execute(query)).mappings().first()
    return None if row is None else UISession(org_id=row["org_id"], csrf_token=row["csrf_token"])


async def end_session(db: Database, token: str) -> None:
    """Sign out: the row is deleted (again, or for an unknown token: no change)."""
    async with db.write() as conn:
        await conn.execute(delete(ui_sessions).where(ui_sessions.c.id == _session_id(token)))
