"""OpenAI Files + Batches through the official ``openai`` SDK; also ``simulator_openai`` and every
OpenAI-protocol provider of the providers file (same class, another ``name``/``base_url``/key).

A submission is two calls: the input JSONL is uploaded (``purpose="batch"``), reported to the
engine as staged (``{"input_file_id"}``, stored before the next call), then the batch is created
with ``completion_window="24h"`` and ``metadata={"longops_provider_batch_id": <our pb id>}``, the
tag that makes reconciliation exact (:attr:`tags_batches`). The SDK never retries
(``max_retries=0``): the engine owns retries, and a blind retry of a create could pay twice.

* The JSONL is written from the request stream to a temporary file (one line per request, each
  request's stored params sent verbatim as ``body``), then uploaded from it: the SDK streams a
  file object in chunks, so memory stays flat whatever the batch's size, and nothing is parsed.
* Errors are classified as for Anthropic (:mod:`longops.providers.base`). An upload that fails
  created no batch: ``ProviderRejected`` for a 4xx other than 429, else ``ProviderUnavailable``
  (retried; an upload whose answer was lost may leave a file the provider expires). A create
  that proves nothing was created deletes the uploaded file before raising; an unknown outcome
  keeps it staged, for the engine to discard after reconciliation finds no batch.
* ``retrieve``, the two result files and the deletion of files are calls on
  :class:`~longops.providers.reads.ReadClient` with the SDK's own headers, as for Anthropic (the
  poller's hot path).
* Results: the output file, then the error file, line by line (:func:`parse_output_line`). An
  item in neither file is left to the engine, which errors it ``missing_result``.
* :meth:`release` deletes the input, output and error files once the results are stored (unless
  ``delete_files`` is off); :meth:`discard` deletes an input file whose batch was never created.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote

import httpx2
import openai
import orjson

from longops.domain.provider_status import UnknownProviderStatus, openai_phase
from longops.domain.requests import CUSTOM_ID_PATTERN
from longops.domain.results import ProviderResult, UnreadableLine
from longops.domain.statuses import ItemStatus
from longops.domain.usage import model_of_response, usage_of_response
from longops.providers.base import (
    OnStaged,
    ProviderBatchInfo,
    ProviderError,
    ProviderNotFound,
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
    Requests,
    Submission,
    each_request,
)
from longops.providers.reads import ReadClient, caused_by, lines_of, root_cause, status_error
from longops.providers.result_lines import fast_loads, unreadable_line

REFERENCE_KEY = "longops_provider_batch_id"
_LIST_PAGE_SIZE = 100
_SDK_ERRORS = (openai.OpenAIError, httpx2.HTTPError)
_NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
_WRITE_CHUNK_BYTES = 256 * 1024
# An error-file line's code for a request the batch never ran, and what the item becomes.
_UNPROCESSED = {
    "batch_expired": (ItemStatus.EXPIRED, "expired"),
    "batch_cancelled": (ItemStatus.CANCELLED, "cancelled"),
}


class OpenAIProvider:
    tags_batches = True  # metadata longops_provider_batch_id

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_requests: int = 50_000,
        max_bytes: int = 209_715_200,
        delete_files: bool = True,
        name: str = "openai",
    ) -> None:
        """``api_key``/``base_url`` default to ``OPENAI_API_KEY``/``OPENAI_BASE_URL`` (the SDK's own
        lookup). ``timeout`` bounds each connect and each read, not a whole upload or download."""
        self.name = name
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._delete_files = delete_files
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        headers = {k: v for k, v in self._client.default_headers.items() if isinstance(v, str)}
        headers.update(self._client.auth_headers)
        self._reads = ReadClient(headers=headers, timeout=timeout, origin=str(self._client.base_url))

    def _url(self, path: str) -> str:
        return str(self._client.base_url.join(path))

    async def create(
        self, submission: Submission, requests: Requests, on_staged: OnStaged
    ) -> ProviderBatchInfo:
        file_id = await self._upload(submission, requests)
        try:
            await on_staged({"input_file_id": file_id})
        except BaseException:
            await self._delete_quietly(file_id)  # not recorded: nothing could delete it later
            raise
        try:
            batch = await self._client.batches.create(
                input_file_id=file_id,
                endpoint=submission.endpoint,  # type: ignore[arg-type]  # checked at create
                completion_window="24h",
                metadata={REFERENCE_KEY: submission.reference},
            )
        except _SDK_ERRORS as exc:
            error = classify_error(exc)
            if isinstance(error, ProviderRejected | ProviderUnavailable):
                await self._delete_quietly(file_id)  # proven: no batch uses it
            raise error from exc
        return batch_info(batch.model_dump(mode="json"))

    async def _upload(self, submission: Submission, requests: Requests) -> str:
        with tempfile.TemporaryFile() as spool:
            await _write_jsonl(spool, submission.endpoint, requests)
            spool.seek(0)
            try:
                uploaded = await self._client.files.create(
                    file=(f"{submission.reference}.jsonl", spool, "application/jsonl"), purpose="batch"
                )
            except _SDK_ERRORS as exc:
                error = classify_error(exc)
                if isinstance(error, ProviderRejected):
                    raise error from exc
                # No batch exists either way: safe to retry the whole submission.
                raise ProviderUnavailable(
                    f"uploading the input file failed: {error.message}", error_type=error.error_type
                ) from exc
        return uploaded.id

    async def discard(self, staged: Mapping[str, str]) -> None:
        file_id = staged.get("input_file_id")
        if file_id is not None:
            await self._delete_file(file_id)

    async def retrieve(self, provider_batch_id: str) -> ProviderBatchInfo:
        url = self._url(f"batches/{quote(provider_batch_id, safe='')}")
        body = await self._reads.get(url)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ProviderOutcomeUnknown(
                f"malformed batch: {body[:200]!r}", error_type="invalid_response"
            ) from exc
        return batch_info(data)

    async def cancel(self, provider_batch_id: str) -> ProviderBatchInfo:
        try:
            batch = await self._client.batches.cancel(provider_batch_id)
        except _SDK_ERRORS as exc:
            raise classify_error(exc) from exc
        return batch_info(batch.model_dump(mode="json"))

    async def results(self, info: ProviderBatchInfo) -> AsyncIterator[ProviderResult | UnreadableLine]:
        """The output file's lines, then the error file's. A stream that breaks raises
        ``ProviderOutcomeUnknown`` after the lines already yielded."""
        for key in ("output_file_id", "error_file_id"):
            file_id = info.handles.get(key)
            if file_id is None:
                continue
            url = self._url(f"files/{quote(file_id, safe='')}/content")
            async with contextlib.aclosing(self._reads.chunks(url, {})) as chunks:
                async for line in lines_of(chunks):
                    yield parse_output_line(line)

    async def release(self, info: ProviderBatchInfo) -> None:
        if not self._delete_files:
            return
        for key in ("input_file_id", "output_file_id", "error_file_id"):
            file_id = info.handles.get(key)
            if file_id is not None:
                await self._delete_file(file_id)

    async def list_recent(self, created_after: datetime) -> list[ProviderBatchInfo]:
        """Pages newest first and stops at the first batch created before ``created_after``."""
        if created_after.tzinfo is None:
            created_after = created_after.replace(tzinfo=UTC)
        found: list[ProviderBatchInfo] = []
        try:
            async for batch in self._client.batches.list(limit=_LIST_PAGE_SIZE):
                info = batch_info(batch.model_dump(mode="json"))
                if info.created_at < created_after:
                    break
                found.append(info)
        except _SDK_ERRORS as exc:
            raise classify_error(exc) from exc
        return found

    async def _delete_file(self, file_id: str) -> None:
        """Delete a file; one already gone counts as deleted. On
        :class:`~longops.providers.reads.ReadClient`, like the poller's other calls."""
        with contextlib.suppress(ProviderNotFound):
            await self._reads.delete(self._url(f"files/{quote(file_id, safe='')}"))

    async def _delete_quietly(self, file_id: str) -> None:
        # On failure the provider expires batch files on its own; nothing else can be done now.
        with contextlib.suppress(ProviderError):
            await self._delete_file(file_id)

    async def aclose(self) -> None:
        await self._reads.aclose()
        await self._client.close()


async def _write_jsonl(spool: IO[bytes], endpoint: str, requests: Requests) -> None:
    """The batch input file: ``{"custom_id","method":"POST","url","body"}`` per request, each
    request's stored params JSON written as is, in chunks of about 256 KiB."""
    prefix = b'","method":"POST","url":%s,"body":' % json.dumps(endpoint).encode()
    chunk = bytearray()
    async for request in each_request(requests):
        # custom_id is [A-Za-z0-9_-]{1,64}: nothing in it needs escaping.
        chunk += b'{"custom_id":"%s%s%s}\n' % (
            request.custom_id.encode(),
            prefix,
            request.params_json.encode(),
        )
        if len(chunk) >= _WRITE_CHUNK_BYTES:
            spool.write(chunk)
            chunk.clear()
    spool.write(chunk)
    spool.flush()


def classify_error(exc: BaseException) -> ProviderError:
    """What an SDK or transport error proves about the call (see :mod:`longops.providers.base`)."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") if isinstance(body.get("message"), str) else exc.message
        return status_error(exc.status_code, exc.type or exc.code, str(message))
    if caused_by(exc, _NOT_SENT):
        return ProviderUnavailable(f"could not connect: {root_cause(exc)}", error_type="connection_error")
    if caused_by(exc, (httpx2.TimeoutException, openai.APITimeoutError)):
        return ProviderOutcomeUnknown(f"timed out: {root_cause(exc)}", error_type="timeout_error")
    if caused_by(exc, (openai.APIConnectionError, httpx2.TransportError)):
        return ProviderOutcomeUnknown(
            f"connection failed: {root_cause(exc)!r}", error_type="connection_error"
        )
    return ProviderOutcomeUnknown(f"{type(exc).__name__}: {exc}")


def batch_info(data: Any) -> ProviderBatchInfo:
    """An OpenAI Batch object (decoded JSON) as ProviderBatchInfo; malformed: ``ProviderOutcomeUnknown``."""
    try:
        batch_id, status = data["id"], data["status"]
        if not isinstance(batch_id, str) or not isinstance(status, str):
            raise TypeError("id and status must be strings")
        counts = data.get("request_counts") or {}
        created_at = datetime.fromtimestamp(int(data["created_at"]), UTC)
        metadata = data.get("metadata") or {}
        handles = {
            key: str(data[key])
            for key in ("input_file_id", "output_file_id", "error_file_id")
            if data.get(key) is not None
        }
        reference = metadata.get(REFERENCE_KEY) if isinstance(metadata, dict) else None
        errors = (data.get("errors") or {}).get("data") or []
        error = "; ".join(f"{e.get('code') or 'error'}: {e.get('message') or ''}" for e in errors) or None
        total = int(counts.get("total") or 0)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProviderOutcomeUnknown(
            f"malformed batch: {str(data)[:200]}", error_type="invalid_response"
        ) from exc
    try:
        phase = openai_phase(status)
    except UnknownProviderStatus as exc:
        raise ProviderOutcomeUnknown(str(exc), error_type="unknown_status") from exc
    return ProviderBatchInfo(
        provider_batch_id=batch_id,
        processing_status=status,
        phase=phase,
        request_count=total,
        created_at=created_at,
        error=error,
        reference=reference if isinstance(reference, str) else None,
        handles=handles,
    )


def _body_json(body: Any) -> str:
    """A response body as compact JSON text for storage (ASCII-escaped when orjson refuses it, e.g.
    an integer beyond 64 bits or a lone surrogate, so any database stores it as UTF-8)."""
    try:
        return orjson.dumps(body).decode()
    except TypeError:
        return json.dumps(body, separators=(",", ":"))


def parse_output_line(line: bytes) -> ProviderResult | UnreadableLine:
    """One line of an output or error file as a ProviderResult; never raises.

    ``response.status_code`` 2xx: succeeded, ``response`` = the endpoint's body. Another status:
    errored with the body's ``error`` (``type``, else ``code``; ``message``). No response: the
    line's ``error``; ``batch_expired``/``batch_cancelled`` make the item expired/cancelled. A line
    that cannot be read errors the item it names (``invalid_results_line``), or, naming none, is an
    :class:`UnreadableLine` (see :mod:`longops.providers.result_lines`)."""
    try:
        data = fast_loads(line)
        custom_id = data["custom_id"]
        if not isinstance(custom_id, str) or not CUSTOM_ID_PATTERN.fullmatch(custom_id):
            raise TypeError("custom_id must be a string matching ^[A-Za-z0-9_-]{1,64}$")
        return _result(custom_id, data)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        return unreadable_line(line, exc)


def _result(custom_id: str, data: dict[str, Any]) -> ProviderResult:
    response = data.get("response")
    if response is not None:
        status_code = int(response["status_code"])
        body = response.get("body")
        if 200 <= status_code < 300:
            return ProviderResult(
                custom_id,
                ItemStatus.SUCCEEDED,
                _body_json(body),
                None,
                usage_of_response(body),
                model_of_response(body),
            )
        inner = body.get("error") if isinstance(body, dict) else None
        inner = inner if isinstance(inner, dict) else {}
        kind = (
            inner.get("type")
            or inner.get("code")
            or ("api_error" if status_code >= 500 else "invalid_request_error")
        )
        message = inner.get("message") or f"HTTP {status_code}"
        return ProviderResult(
            custom_id, ItemStatus.ERRORED, None, {"type": str(kind), "message": str(message)}
        )
    error = data["error"]
    code, message = error.get("code") or error.get("type") or "api_error", error.get("message") or ""
    status, kind = _UNPROCESSED.get(code, (ItemStatus.ERRORED, code))
    return ProviderResult(custom_id, status, None, {"type": str(kind), "message": str(message)})
