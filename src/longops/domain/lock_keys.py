"""PostgreSQL advisory-lock keys from names: the leader lock, the migrations, claims of a job type.

A key is the first 8 bytes of the SHA-256 of the name, as a signed 64-bit integer (the type of
``pg_advisory_lock``'s argument). It is stable across processes, versions and machines: instances
that agree on a name agree on the key. Pure: hashing only.
"""

from __future__ import annotations

import hashlib


def advisory_lock_key(name: str) -> int:
    """The signed 64-bit advisory-lock key of ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
