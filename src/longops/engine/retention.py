"""Pruner (leader only): deletes what is older than ``RETENTION_DAYS``, in bounded chunks.

Invariants:

* Only terminal jobs completed before the window are deleted, with everything hanging off them
  (items, provider batches, webhook events and deliveries); an active job is never deleted, however
  old. Uploaded files are deleted once created before the window.
* Every transaction is bounded: a cycle deletes at most :data:`ITEM_CHUNK` items of the oldest
  :data:`JOB_CHUNK` expired jobs, or, once those have no items left, the jobs themselves (so a job
  with a million items never becomes one huge cascading delete); and at most :data:`FILE_CHUNK`
  files.
* A file's bytes are removed before its row: a crash in between leaves a row without bytes, which
  the next cycle deletes, never bytes that no row points to. Temporary uploads older than
  :data:`STALE_UPLOAD` (a crashed or abandoned upload) are removed too.
* A cycle that found a full chunk runs again at once; otherwise the next one runs after
  :data:`PRUNE_INTERVAL_SECONDS`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from longops.domain.clock import Clock, system_clock
from longops.settings import Settings
from longops.store import files as file_store
from longops.store import retention
from longops.store.db import Database

log = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 300.0
JOB_CHUNK = 100
ITEM_CHUNK = 5000
FILE_CHUNK = 500
STALE_UPLOAD = timedelta(days=1)


class Pruner:
    name = "pruner"

    def __init__(self, db: Database, settings: Settings, *, clock: Clock = system_clock) -> None:
        """``clock`` says what is older than the window (the system's by default)."""
        self._db = db
        self._clock = clock
        self._window = timedelta(days=settings.retention_days)
        self._files_dir = Path(settings.files_dir)

    async def run_once(self) -> float:
        cutoff = self._clock() - self._window
        more = await self._prune_jobs(cutoff)
        more = await self._prune_files(cutoff) or more
        self._prune_stale_uploads()
        return 0.0 if more else PRUNE_INTERVAL_SECONDS

    async def _prune_jobs(self, cutoff: datetime) -> bool:
        async with self._db.write() as conn:
            job_ids = await retention.expired_jobs(conn, cutoff, JOB_CHUNK)
            if not job_ids:
                return False
            deleted_items = await retention.delete_items(conn, job_ids, ITEM_CHUNK)
            if deleted_items == ITEM_CHUNK:
                return True
            deleted = await retention.delete_jobs(conn, job_ids, cutoff)
        log.info("retention: deleted %d job(s) completed before %s", deleted, cutoff.isoformat())
        return len(job_ids) == JOB_CHUNK

    async def _prune_files(self, cutoff: datetime) -> bool:
        async with self._db.read() as conn:
            expired = await file_store.expired_files(conn, cutoff, FILE_CHUNK)
        if not expired:
            return False
        for _file_id, path in expired:
            (self._files_dir / path).unlink(missing_ok=True)
        async with self._db.write() as conn:
            deleted = await file_store.delete_files(conn, [file_id for file_id, _ in expired])
        log.info("retention: deleted %d file(s) uploaded before %s", deleted, cutoff.isoformat())
        return len(expired) == FILE_CHUNK

    def _prune_stale_uploads(self) -> None:
        incoming = self._files_dir / file_store.INCOMING
        if not incoming.is_dir():
            return
        oldest = (self._clock() - STALE_UPLOAD).timestamp()
        for partial in incoming.iterdir():
            if partial.stat().st_mtime < oldest:
                partial.unlink(missing_ok=True)
                log.info("retention: removed abandoned upload %s", partial.name)
