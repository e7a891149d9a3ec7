"""``/v1/files``: upload a file of any size (streamed to disk) and look it up.

The body of ``POST /v1/files`` is the file's bytes themselves (``curl --data-binary @batch.jsonl``),
read chunk by chunk and written to ``LONGOPS_FILES_DIR`` as it arrives: memory stays flat whatever
the size, up to ``LONGOPS_MAX_FILE_BYTES`` (``MAX_REQUEST_BYTES`` does not apply to this path).
A disk that fills during the upload answers 507 ``insufficient_storage`` (after the rest of the
body is read and dropped, so the client sees the answer) and leaves no partial file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import IO, Annotated

from fastapi import APIRouter, Query, Request

from longops.api.deps import Org, State
from longops.api.errors import APIError
from longops.domain.ids import new_id
from longops.domain.schemas import FileObject
from longops.store import files as file_store
from longops.store.storage import is_storage_full
from longops.store.types import utcnow

router = APIRouter(prefix="/v1/files", tags=["files"])

UPLOAD_PATH = "/v1/files"
_BODY = {
    "requestBody": {
        "required": True,
        "description": "the file's bytes (e.g. a JSONL batch file), sent as the raw body",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _too_large(limit: int) -> APIError:
    return APIError(413, "payload_too_large", f"file is larger than MAX_FILE_BYTES ({limit} bytes)")


def _sync(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


async def _discard_rest(request: Request, budget: int) -> None:
    """Read (and drop) what is left of the body, up to ``budget`` bytes, so that the client reads
    the error answer: a connection closed with unread bytes is reset, and the answer lost."""
    async for chunk in request.stream():
        budget -= len(chunk)
        if budget < 0:
            return


@router.post("", status_code=201, response_model=FileObject, openapi_extra=_BODY)
async def upload_file(
    request: Request,
    state: State,
    org: Org,
    filename: Annotated[
        str | None, Query(max_length=255, description="the file's name, kept for reference")
    ] = None,
) -> FileObject:
    if request.headers.get("content-type", "").startswith("multipart/"):
        raise APIError(
            400,
            "invalid_request",
            "send the file's bytes as the request body (e.g. curl --data-binary @batch.jsonl), not multipart",
        )
    limit = state.settings.max_file_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    files_dir = Path(state.settings.files_dir)
    file_id = new_id("file")
    partial = file_store.incoming_path(files_dir, file_id)
    partial.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                digest.update(chunk)
                out.write(chunk)
            await asyncio.to_thread(_sync, out)
        if size == 0:
            raise APIError(422, "validation_error", "the file is empty: send its bytes as the request body")
        path = await asyncio.to_thread(file_store.commit_upload, files_dir, file_id)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if is_storage_full(exc):
            await _discard_rest(request, limit - size)
        raise
    stored = file_store.StoredFile(
        id=file_id,
        org_id=org,
        filename=filename,
        bytes=size,
        sha256=digest.hexdigest(),
        path=path,
        created_at=utcnow(),
    )
    try:
        await file_store.insert_file(state.db, stored)
    except BaseException:
        (files_dir / path).unlink(missing_ok=True)
        raise
    return FileObject(
        id=stored.id,
        filename=stored.filename,
        bytes=stored.bytes,
        sha256=stored.sha256,
        created_at=stored.created_at,
    )


@router.get("/{file_id}", response_model=FileObject)
async def get_file(file_id: str, state: State, org: Org) -> FileObject:
    async with state.db.read() as conn:
        try:
            return file_store.file_view(await file_store.get_file_row(conn, org, file_id))
        except file_store.FileNotFound:
            raise APIError(404, "not_found", f"no such file: {file_id}") from None
