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
