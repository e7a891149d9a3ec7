"""Uploaded files: rows in ``files``, bytes on disk under ``LONGOPS_FILES_DIR``.

The bytes are written first, under a temporary name in ``<files_dir>/.incoming/``, then renamed into
place; the row is inserted last. So a row always points at a whole file, and a crash mid-upload
leaves at most a temporary file (the pruner removes stale ones). Every instance that runs
``batch_ingest`` jobs must see the same directory (one host, or a shared volume).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import RowMapping, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.schemas import FileObject
from longops.store.db import Database
from longops.store.tables import files

INCOMING = ".incoming"


class FileNotFound(Exception):
    pass


@dataclass(frozen=True)
class StoredFile:
    id: str
    org_id: str
    filename: str | None
    bytes: int
    sha256: str
    path: str  # relative to the files directory
    created_at: datetime


def incoming_path(files_dir: Path, file_id: str) -> Path:
    """Where an upload is written until it is whole."""
    return files_dir / INCOMING / f"{file_id}.part"


def final_path(files_dir: Path, file_id: str) -> Path:
    return files_dir / f"{file_id}.jsonl"


def commit_upload(files_dir: Path, file_id: str) -> str:
    """Move a whole upload into place (durably); returns its path relative to ``files_dir``."""
    source, target = incoming_path(files_dir, file_id), final_path(files_dir, file_id)
    os.replace(source, target)
    directory = os.open(files_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return target.name


async def insert_file(db: Database, stored: StoredFile) -> None:
    async with db.write() as conn:
        await conn.execute(
            insert(files).values(
                id=stored.id,
                org_id=stored.org_id,
                filename=stored.filename,
                bytes=stored.bytes,
                sha256=stored.sha256,
                path=stored.path,
                created_at=stored.created_at,
            )
        )


async def get_file_row(conn: AsyncConnection, org_id: str, file_id: str) -> RowMapping:
    row = (
        (await conn.execute(select(files).where(files.c.id == file_id, files.c.org_id == org_id)))
        .mappings()
        .first()
    )
    if row is None:
        raise FileNotFound(file_id)
    return row


def file_view(row: RowMapping) -> FileObject:
    return FileObject(
        id=row["id"],
        filename=row["filename"],
        bytes=row["bytes"],
        sha256=row["sha256"],
        created_at=row["created_at"],
    )


async def expired_files(conn: AsyncConnection, cutoff: datetime, limit: int) -> list[tuple[str, str]]:
    """(id, relative path) of files created before ``cutoff``, oldest first, at most ``limit``."""
    rows = await conn.execute(
        select(files.c.id, files.c.path)
        .where(files.c.created_at < cutoff)
        .order_by(files.c.created_at)
        .limit(limit)
    )
    return [(file_id, path) for file_id, path in rows]


async def delete_files(conn: AsyncConnection, file_ids: list[str]) -> int:
    result = await conn.execute(delete(files).where(files.c.id.in_(file_ids)))
    return int(result.rowcount)
