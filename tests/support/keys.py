"""API keys for tests that talk to a server from outside its event loop."""

from __future__ import annotations

import asyncio

from longops.store import api_keys
from longops.store.db import open_database


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create_key_now(database_url: str, org: str) -> str:
    """Create a key for ``org`` in the (migrated) database at ``database_url``; returns the key."""

    async def create() -> str:
        db = open_database(database_url)
        try:
            return (await api_keys.create_key(db, org)).secret
        finally:
            await db.dispose()

    return asyncio.run(create())


def revoke_keys_now(database_url: str, org: str) -> None:
    """Revoke every key of ``org``, as ``longops keys revoke`` would."""

    async def revoke() -> None:
        db = open_database(database_url)
        try:
            for key in await api_keys.list_keys(db):
                if key.org_id == org:
                    await api_keys.revoke_key(db, key.id)
        finally:
            await db.dispose()

    asyncio.run(revoke())
