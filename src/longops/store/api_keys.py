"""API keys: created, listed and revoked by ``longops keys``; looked up on every API request.

A key is ``lo_`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits). Only its SHA-256
is stored, plus its first characters (``prefix``) so a person can tell keys apart in a list.

Why a plain, unsalted SHA-256 rather than a slow password hash: salts and slow hashes exist to make
guessing *low-entropy* secrets from a stolen hash expensive. Guessing one of 2^256 random keys is out
of reach whatever the hash costs, so a fast hash loses nothing, and being deterministic it lets a
request find its key by one lookup on a unique index instead of trying every stored hash.

Organizations are implicit: a key carries the name of its organization, and that name is the
``org_id`` every query of the key's requests is scoped to. Keys are never deleted, only revoked, so
"has any key ever been created" (which ends open mode, see ``longops.api.auth``) never turns back.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping, bindparam, insert, select, update

from longops.domain.ids import new_id
from longops.store.db import Database
from longops.store.reads import DriverQuery
from longops.store.tables import api_keys
from longops.store.types import utcnow

KEY_PREFIX = "lo_"
KEY_PATTERN = re.compile(r"lo_[A-Za-z0-9_-]{40,128}")
SHOWN_CHARS = 11  # "lo_" + 8 characters: enough to tell keys apart, far too few to guess the rest
ORG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class KeyNotFound(LookupError):
    pass


class InvalidOrgName(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What is stored about a key; never the key itself."""

    id: str
    org_id: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    record: ApiKey
    secret: str  # the key itself: shown once, stored nowhere


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def is_well_formed(key: str) -> bool:
    return KEY_PATTERN.fullmatch(key) is not None


def check_org_name(org_id: str) -> None:
    if ORG_PATTERN.fullmatch(org_id) is None:
        raise InvalidOrgName(
            f"invalid organization name {org_id!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )


def _record(row: RowMapping) -> ApiKey:
    return ApiKey(
        id=row["id"],
        org_id=row["org_id"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


async def create_key(db: Database, org_id: str) -> CreatedKey:
    check_org_name(org_id)
    secret = generate_key()
    record = ApiKey(
        id=new_id("key"), org_id=org_id, prefix=secret[:SHOWN_CHARS], created_at=utcnow(), revoked_at=None
    )
    async with db.write() as conn:
        await conn.execute(
            insert(api_keys).values(
                id=record.id,
                org_id=record.org_id,
                prefix=record.prefix,
                hash=hash_key(secret),
                created_at=record.created_at,
            )
        )
    return CreatedKey(record, secret)


async def list_keys(db: Database) -> list[ApiKey]:
    """Every key, oldest first (ids are time-ordered)."""
    columns = (
        api_keys.c.id,
        api_keys.c.org_id,
        api_keys.c.prefix,
        api_keys.c.created_at,
        api_keys.c.revoked_at,
    )
    async with db.read() as conn:
        rows = (await conn.execute(select(*columns).order_by(api_keys.c.id))).mappings().all()
    return [_record(row) for row in rows]


async def revoke_key(db: Database, key_id: str) -> ApiKey:
    """Revoke a key (again: no change). Raises :class:`KeyNotFound` for an unknown id."""
    async with db.write() as conn:
        await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).mappings().first()
    if row is None:
        raise KeyNotFound(key_id)
    return _record(row)


# The lookup of every API request: one statement on the unique index, run on the driver (store.reads).
_ORG_FOR_HASH = DriverQuery(
    select(api_keys.c.org_id).where(api_keys.c.hash == bindparam("hash"), api_keys.c.revoked_at.is_(None))
)


async def org_for_key(db: Database, key: str) -> str | None:
    """The organization of an active key; None for a malformed, unknown or revoked one."""
    if not is_well_formed(key):
        return None
    row = await _ORG_FOR_HASH.first(db, hash=hash_key(key))
    return None if row is None else str(row["org_id"])


async def any_key_exists(db: Database, *, active_only: bool = False) -> bool:
    query = select(api_keys.c.id).limit(1)
    if active_only:
        query = query.where(api_keys.c.revoked_at.is_(None))
    async with db.read() as conn:
        return (await conn.execute(query)).first() is not None
