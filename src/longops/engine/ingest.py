"""The built-in ``batch_ingest`` job: a JSONL file uploaded with ``POST /v1/files`` becomes a batch.

Input ``{"file_id", "provider", "endpoint"?, "metadata"?, "callback_url"?}``; result
``{"batch_id", "requests", "file_id"}``. The batch then runs like one created with ``POST /v1/batches``.

Invariants:

* Every line is checked with the rules of ``POST /v1/batches`` (``domain.requests``). The first bad
  line fails the job at once (no retry: the file will not change) with ``error`` =
  ``{"type": "validation_error", "message": "line 17 …"}``, and nothing is stored.
* The batch is written in one transaction (``store.jobs.create_batch_streaming``): it appears whole,
  in status ``created``, or not at all; neither the API nor the submitter sees it half-written.
* Memory holds one chunk of lines: the file is read line by line and parsed chunk by chunk in a
  thread (the event loop keeps serving heartbeats and the API); ``custom_id`` uniqueness is checked
  against the rows already written, not against a set of every id.
* Idempotent across attempts: the batch carries the idempotency key ``batch_ingest:<job id>``, so
  an attempt that runs again after a crash that followed the commit returns the same batch.
* On SQLite the transaction holds the database's write lock while the file is ingested: other
  writes wait (up to SQLite's busy timeout, 30 s). Very large files belong on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from longops.domain.requests import BatchRequest, BatchValidationError, checked_endpoint, parse_request_line
from longops.handlers import Cancelled, HandlerOptions, JobContext, PermanentError
from longops.providers.registry import ProviderSpec, not_configured_reason
from longops.settings import Settings
from longops.store import files as file_store
from longops.store.db import Database
from longops.store.jobs import DuplicateCustomId, NewBatch, create_batch_streaming

INGEST_JOB_TYPE = "batch_ingest"
INGEST_OPTIONS = HandlerOptions(max_attempts=3, timeout_seconds=6 * 3600.0, concurrency=None)
CHUNK_LINES = 2000
CHUNK_BYTES = 8 * 1024 * 1024
_INPUT_FIELDS = frozenset({"file_id", "provider", "endpoint", "metadata", "callback_url"})


class IngestInputError(ValueError):
    """The input of a ``batch_ingest`` job is wrong (the message names the field)."""


@dataclass(frozen=True)
class IngestInput:
    file_id: str
    provider: ProviderSpec
    endpoint: str
    metadata: dict[str, Any]
    callback_url: str | None


async def check_input(
    db: Database, providers: Mapping[str, ProviderSpec], org_id: str, raw: Any
) -> IngestInput:
    """Validate a ``batch_ingest`` input against this organization's files and the configured providers."""
    if not isinstance(raw, dict):
        raise IngestInputError(
            'input: must be an object {"file_id", "provider", "endpoint"?, "metadata"?, "callback_url"?}'
        )
    unknown = set(raw) - _INPUT_FIELDS
    if unknown:
        raise IngestInputError(f"input: unknown field(s): {', '.join(sorted(unknown))}")
    file_id, provider = raw.get("file_id"), raw.get("provider")
    metadata, callback_url = raw.get("metadata", {}), raw.get("callback_url")
    if not isinstance(file_id, str):
        raise IngestInputError("input.file_id: must be the id of an uploaded file (POST /v1/files)")
    if not isinstance(provider, str):
        raise IngestInputError("input.provider: must be a provider name")
    spec = providers.get(provider)
    if spec is None:
        raise IngestInputError(f"input.provider: {not_configured_reason(provider, providers)}")
    try:
        endpoint = checked_endpoint(raw.get("endpoint"), spec.endpoints, spec.name)
    except BatchValidationError as exc:
        raise IngestInputError(f"input.{exc}") from None
    if not isinstance(metadata, dict):
        raise IngestInputError("input.metadata: must be an object")
    if callback_url is not None and not isinstance(callback_url, str):
        raise IngestInputError("input.callback_url: must be a URL or null")
    async with db.read() as conn:
        try:
            await file_store.get_file_row(conn, org_id, file_id)
        except file_store.FileNotFound:
            raise IngestInputError(f"input.file_id: no such file: {file_id}") from None
    return IngestInput(file_id, spec, endpoint, metadata, callback_url)


@dataclass
class _Reader:
    """Reads a JSONL file in chunks of parsed requests, remembering the line of each request."""

    handle: IO[bytes]
    openai_endpoint: str | None
    max_requests: int
    max_depth: int
    line: int = 0
    requests: int = 0
    bytes_read: int = 0
    eof: bool = False
    chunk_start: int = 0  # the position (seq) of the chunk's first request in the batch
    chunk_lines: list[int] = field(default_factory=list)

    def read_chunk(self) -> list[BatchRequest]:
        """The next chunk of requests (blank lines skipped; sets ``eof`` at the end). Runs in a thread."""
        chunk: list[BatchRequest] = []
        lines: list[int] = []
        size = 0
        while len(chunk) < CHUNK_LINES and size < CHUNK_BYTES:
            raw = self.handle.readline()
            if not raw:
                self.eof = True
                break
            self.line += 1
            self.bytes_read += len(raw)
            size += len(raw)
            request = parse_request_line(
                raw, self.line, openai_endpoint=self.openai_endpoint, max_depth=self.max_depth
            )
            if request is None:
                continue
            if self.requests + len(chunk) >= self.max_requests:
                raise BatchValidationError(
                    f"line {self.line}",
                    f"the file has more than {self.max_requests} requests (MAX_BATCH_REQUESTS)",
                )
            chunk.append(request)
            lines.append(self.line)
        self.chunk_start = self.requests
        self.chunk_lines = lines
        self.requests += len(chunk)
        return chunk


class BatchIngest:
    """The ``batch_ingest`` handler, bound to this engine's database, settings and providers."""

    def __init__(self, db: Database, settings: Settings, providers: Mapping[str, ProviderSpec]) -> None:
        self._db = db
        self._settings = settings
        self._providers = providers

    async def __call__(self, ctx: JobContext, raw: Any) -> dict[str, Any]:
        try:
            spec = await check_input(self._db, self._providers, ctx.org_id, raw)
        except IngestInputError as exc:
            raise PermanentError(str(exc), error_type="validation_error") from None
        async with self._db.read() as conn:
            row = await file_store.get_file_row(conn, ctx.org_id, spec.file_id)
        path = Path(self._settings.files_dir) / row["path"]
        if not path.is_file():
            raise PermanentError(
                f"the bytes of file {spec.file_id} are not in this instance's LONGOPS_FILES_DIR ({path})",
                error_type="file_missing",
            )
        new = NewBatch(
            org_id=ctx.org_id,
            provider=spec.provider.name,
            requests=(),
            endpoint=spec.endpoint,
            metadata=spec.metadata,
            callback_url=spec.callback_url,
            idempotency_key=f"{INGEST_JOB_TYPE}:{ctx.job_id}",
            request_hash=ctx.job_id,
        )
        with path.open("rb") as handle:
            reader = _Reader(
                handle,
                spec.endpoint if spec.provider.accepts_openai_lines else None,
                self._settings.max_batch_requests,
                self._settings.max_json_depth,
            )
            try:
                batch_id, _replayed = await create_batch_streaming(
                    self._db, new, self._chunks(ctx, reader, row["bytes"])
                )
            except BatchValidationError as exc:
                raise PermanentError(str(exc), error_type="validation_error") from None
            except DuplicateCustomId as exc:
                line = reader.chunk_lines[exc.seq - reader.chunk_start]
                raise PermanentError(
                    f"line {line} (custom_id {exc.custom_id!r}).custom_id: is a duplicate: "
                    "custom_id must be unique",
                    error_type="validation_error",
                ) from None
        await ctx.progress(row["bytes"], row["bytes"], message=f"{reader.requests} requests stored")
        return {"batch_id": batch_id, "requests": reader.requests, "file_id": spec.file_id}

    async def _chunks(
        self, ctx: JobContext, reader: _Reader, total: int
    ) -> AsyncIterator[list[BatchRequest]]:
        while not reader.eof:
            if ctx.cancelled:
                raise Cancelled()
            chunk = await asyncio.to_thread(reader.read_chunk)
            if chunk:
                yield chunk
            await ctx.progress(reader.bytes_read, total, message=f"{reader.requests} requests read")
        if reader.requests == 0:
            raise PermanentError("the file contains no requests", error_type="validation_error")
