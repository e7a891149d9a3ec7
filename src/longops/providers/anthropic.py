"""Anthropic Message Batches through the official SDK; also the bundled simulator (same class and
protocol, another ``name`` and ``base_url``).

Everything this adapter raises is a :class:`~longops.providers.base.ProviderError`, classified by
what it proves (see :mod:`longops.providers.base`):

* nothing was sent (connection refused, connect or pool timeout), 429, 529 → ``ProviderUnavailable``
* 404 → ``ProviderNotFound``; any other 4xx → ``ProviderRejected`` with the provider's type and message
* a timeout after sending, 5xx, a reset or cut connection, a malformed answer → ``ProviderOutcomeUnknown``

The SDK never retries (``max_retries=0`` on the client): the engine's loops own retries and backoff,
and a blind retry of a create could pay twice.

``retrieve`` and ``results`` (the poller's two calls per ended batch) are plain GETs with the SDK's
own headers on :class:`~longops.providers.reads.ReadClient` (aiohttp: a quarter of httpx's CPU per
call); error answers are classified the same way.

``create`` sends each request's stored ``params_json`` verbatim inside a body built by concatenation
and streamed in chunks, through the SDK's generic ``post``: nothing is parsed or re-encoded. For
100,000 requests of 1 KB against the simulator, building the body takes 0.35 s where
``json.loads`` + ``batches.create`` spend about 3 s more (parsing, the SDK's walk of the body and
re-encoding).

``results`` streams the JSONL body from the batch's ``results_url`` (the one the poller's retrieve
just returned, so no second retrieve as in the SDK's ``results()``), splits it into lines as bytes
and parses each with :func:`parse_result_line`. A succeeded line in the provider's compact layout
(``{"custom_id":…,"result":{"type":"succeeded","message":{…}}}``) is not decoded into objects and
re-encoded: its message is validated with ``orjson`` and stored as the provider's own bytes (so
nothing is lost, not even integers beyond 64 bits); the value that validation decodes gives the
result's usage and model (:mod:`longops.domain.usage`). Other layouts take the exact ``json`` path.
100,000 lines of about 1 KB: 3.9 s with ``iter_lines`` + ``json.loads``/``json.dumps`` (11.6 s
through the SDK's typed decoder), 0.5 s now (figures include the simulator generating the lines;
see ``bench/README.md``).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import anthropic
import httpx2
import orjson
from anthropic.types.messages import MessageBatch

from longops.domain.provider_status import UnknownProviderStatus, anthropic_item_status, anthropic_phase
from longops.domain.requests import CUSTOM_ID_PATTERN
from longops.domain.results import ProviderResult, UnreadableLine
from longops.domain.statuses import ItemStatus
from longops.domain.usage import model_of_response, usage_of_response
from longops.providers.base import (
    OnStaged,
    ProviderBatchInfo,
    ProviderError,
    ProviderOutcomeUnknown,
    ProviderUnavailable,
    Requests,
    Submission,
    each_request,
)
from longops.providers.reads import ReadClient, caused_by, lines_of, root_cause, status_error
from longops.providers.result_lines import fast_loads, strict_loads, unreadable_line

_BATCHES_PATH = "/v1/messages/batches"
_LIST_PAGE_SIZE = 100
_SDK_ERRORS = (anthropic.AnthropicError, httpx2.HTTPError)
_NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
_UNPROCESSED = {
    ItemStatus.CANCELLED: {"type": "cancelled", "message": "The batch was cancelled before this request ran"},
    ItemStatus.EXPIRED: {"type": "expired", "message": "The batch expired before this request ran"},
}


class AnthropicProvider:
    tags_batches = False  # a Message Batch keeps no caller metadata

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_requests: int = 100_000,
        max_bytes: int = 268_435_456,
        name: str = "anthropic",
    ) -> None:
        """``api_key``/``base_url`` default to ``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL`` (the SDK's
        own lookup). ``timeout`` bounds each connect and each read, not a whole results stream."""
        self.name = name
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0
        )
        # The poller's two calls per ended batch, with the SDK's own headers (see providers/reads.py).
        headers = {k: v for k, v in self._client.default_headers.items() if isinstance(v, str)}
        self._reads = ReadClient(headers=headers, timeout=timeout, origin=str(self._client.base_url))

    async def create(
        self, submission: Submission, requests: Requests, on_staged: OnStaged
    ) -> ProviderBatchInfo:
        """The requests go inline in the create body: nothing is staged."""
        try:
            batch = await self._client.post(
                _BATCHES_PATH,
                cast_to=MessageBatch,
                content=_create_body(requests),
                options={"headers": {"Content-Type": "application/json"}},
            )
        except _SDK_ERRORS as exc:
            raise classify_error(exc) from exc
        return _batch_info(batch)

    async def retrieve(self, provider_batch_id: str) -> ProviderBatchInfo:
        """Read with ``orjson`` into the few fields we use instead of the SDK's typed model, over
        :class:`~longops.providers.reads.ReadClient`: the poller's hottest provider call."""
        url = self._client.base_url.join(f"{_BATCHES_PATH[1:]}/{quote(provider_batch_id, safe='')}")
        return _batch_info_from_json(await self._reads.get(str(url)))

    async def cancel(self, provider_batch_id: str) -> ProviderBatchInfo:
        try:
            batch = await self._client.messages.batches.cancel(provider_batch_id)
        except _SDK_ERRORS as exc:
            raise classify_error(exc) from exc
        return _batch_info(batch)

    async def discard(self, staged: Mapping[str, str]) -> None:
        """Nothing is ever staged."""

    async def release(self, info: ProviderBatchInfo) -> None:
        """A Message Batch's results stay until the provider archives them; nothing to delete."""

    async def results(self, info: ProviderBatchInfo) -> AsyncIterator[ProviderResult | UnreadableLine]:
        """Results as they arrive. A stream that breaks raises ``ProviderOutcomeUnknown`` after the
        lines already yielded; it never ends silently short. A line that cannot be read does not
        break it (see :func:`parse_result_line`). The ``results_url`` of the retrieve that saw the
        batch end saves a second retrieve."""
        results_url = info.handles.get("results_url")
        if results_url is None:
            info = await self.retrieve(info.provider_batch_id)
            results_url = info.handles.get("results_url")
            if results_url is None:
                raise ProviderOutcomeUnknown(
                    f"batch {info.provider_batch_id} has no results yet ({info.processing_status})",
                    error_type="results_not_ready",
                )
        headers = {"Accept": "application/binary"}
        async with contextlib.aclosing(self._reads.chunks(results_url, headers)) as chunks:
            async for line in lines_of(chunks):
                yield parse_result_line(line)

    async def list_recent(self, created_after: datetime) -> list[ProviderBatchInfo]:
        """Pages newest first and stops at the first batch created before ``created_after``
        (a naive datetime is taken as UTC)."""
        if created_after.tzinfo is None:
            created_after = created_after.replace(tzinfo=UTC)
        found: list[ProviderBatchInfo] = []
        try:
            async for batch in self._client.messages.batches.list(limit=_LIST_PAGE_SIZE):
                if batch.created_at < created_after:
                    break
                found.append(_batch_info(batch))
        except _SDK_ERRORS as exc:
            raise classify_error(exc) from exc
        return found

    async def aclose(self) -> None:
        await self._reads.aclose()
        await self._client.close()


_BODY_CHUNK_BYTES = 256 * 1024


async def _create_body(requests: Requests) -> AsyncIterator[bytes]:
    """``{"requests": [...]}`` around each request's stored params JSON, which is sent as is.

    Streamed in chunks of about 256 KiB (chunked transfer encoding), as the requests arrive: the
    whole body of a 100,000 × 1 KB batch would be two or three copies of 100 MB at once (the
    entries, their join, the final concatenation)."""
    chunk = bytearray(b'{"requests":[')
    first = True
    async for request in each_request(requests):
        if not first:
            chunk += b","
        first = False
        chunk += b'{"custom_id":%s,"params":%s}' % (
            json.dumps(request.custom_id).encode(),
            request.params_json.encode(),
        )
        if len(chunk) >= _BODY_CHUNK_BYTES:
            yield bytes(chunk)
            chunk.clear()
    chunk += b"]}"
    yield bytes(chunk)


def classify_error(exc: BaseException) -> ProviderError:
    """What an SDK or transport error proves about the call (see the module docstring)."""
    if isinstance(exc, anthropic.APIStatusError):
        return status_error(exc.status_code, exc.type, exc.api_message or exc.message)
    if caused_by(exc, _NOT_SENT):
        return ProviderUnavailable(f"could not connect: {root_cause(exc)}", error_type="connection_error")
    if caused_by(exc, (httpx2.TimeoutException, anthropic.APITimeoutError)):
        return ProviderOutcomeUnknown(f"timed out: {root_cause(exc)}", error_type="timeout_error")
    if caused_by(exc, (anthropic.APIConnectionError, httpx2.TransportError)):
        return ProviderOutcomeUnknown(
            f"connection failed: {root_cause(exc)!r}", error_type="connection_error"
        )
    return ProviderOutcomeUnknown(f"{type(exc).__name__}: {exc}")


def _batch_info(batch: MessageBatch) -> ProviderBatchInfo:
    counts = batch.request_counts
    try:
        phase = anthropic_phase(batch.processing_status)
    except UnknownProviderStatus as exc:
        raise ProviderOutcomeUnknown(str(exc), error_type="unknown_status") from exc
    return ProviderBatchInfo(
        provider_batch_id=batch.id,
        processing_status=batch.processing_status,
        phase=phase,
        request_count=counts.processing
        + counts.succeeded
        + counts.errored
        + counts.canceled
        + counts.expired,
        created_at=batch.created_at,
        handles={"results_url": batch.results_url} if batch.results_url else {},
    )


# A succeeded line in the provider's compact layout; ``custom_id`` is restricted to [A-Za-z0-9_-].
_SUCCEEDED = re.compile(rb'\{"custom_id":"([A-Za-z0-9_-]{1,64})","result":\{"type":"succeeded","message":')


_INVALID = object()


def _decoded(raw: bytes) -> Any:
    """``raw`` decoded if it is exactly one strict JSON value, else ``_INVALID``."""
    try:
        return fast_loads(raw)
    except (ValueError, RecursionError):
        return _INVALID


def _batch_info_from_json(body: bytes) -> ProviderBatchInfo:
    """A MessageBatch object as ProviderBatchInfo; anything malformed is ``ProviderOutcomeUnknown``."""
    try:
        data = orjson.loads(body)
        counts = data["request_counts"]
        total = sum(
            int(counts[name]) for name in ("processing", "succeeded", "errored", "canceled", "expired")
        )
        batch_id, status, results_url = data["id"], data["processing_status"], data.get("results_url")
        created_at = datetime.fromisoformat(data["created_at"])
        if not isinstance(batch_id, str) or not isinstance(status, str):
            raise TypeError("id and processing_status must be strings")
        if results_url is not None and not isinstance(results_url, str):
            raise TypeError("results_url must be a string")
    except (ValueError, KeyError, TypeError) as exc:
        raise ProviderOutcomeUnknown(
            f"malformed message batch: {body[:200]!r}", error_type="invalid_response"
        ) from exc
    try:
        phase = anthropic_phase(status)
    except UnknownProviderStatus as exc:
        raise ProviderOutcomeUnknown(str(exc), error_type="unknown_status") from exc
    return ProviderBatchInfo(
        provider_batch_id=batch_id,
        processing_status=status,
        phase=phase,
        request_count=total,
        created_at=created_at if created_at.tzinfo is not None else created_at.replace(tzinfo=UTC),
        handles={"results_url": results_url} if results_url else {},
    )


def _compact_json(value: Any) -> str:
    """``value`` as compact JSON text that any database can store as UTF-8.

    Non-ASCII text stays as it is (at most half the bytes of its ``\\u`` escapes), except
    when a string holds a lone surrogate (from a ``"\\ud83d"`` escape cut from its pair) or a NUL:
    no UTF-8 encoding exists for the first, PostgreSQL's text refuses the second, and the write of
    the whole group of results would fail on every retry; then the text is escaped to ASCII, which
    keeps the provider's escape as it was sent.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"))
    if "\x00" in text:
        return json.dumps(value, separators=(",", ":"))
    return text


_ERROR_TEXT_CHARS = 2000


# Where a line that cannot be parsed names its item (enough to error that item, not the stream).
def _error_text(value: Any, default: str) -> str:
    """A provider's error field as text a reader can show: a string as is (bounded, no NUL),
    anything else as its JSON."""
    if value is None:
        return default
    text = value if isinstance(value, str) else _compact_json(value)
    return text.replace("\x00", "\ufffd")[:_ERROR_TEXT_CHARS]


def _succeeded(custom_id: str, message_json: str, message: Any) -> ProviderResult:
    return ProviderResult(
        custom_id,
        ItemStatus.SUCCEEDED,
        message_json,
        None,
        usage_of_response(message),
        model_of_response(message),
    )


def parse_result_line(line: str | bytes) -> ProviderResult | UnreadableLine:
    """One JSONL results line as a ProviderResult; never raises.

    Fast path: a succeeded line laid out as ``{"custom_id":"…","result":{"type":"succeeded",
    "message":M}}`` stores ``M`` as sent, once it is checked to be exactly one strict JSON object
    (then the whole line is valid JSON of that shape, and ``M`` is never re-encoded; its decoded
    value only gives the usage and model).
    Anything else is decoded with ``json`` and the message re-encoded compactly.

    A line that cannot be read (not JSON, not UTF-8, cut, of an unknown shape) errors the item it
    names with ``invalid_results_line``; one that names no item is an :class:`UnreadableLine`.
    """
    raw = (line.encode() if isinstance(line, str) else line).strip()
    fast = _SUCCEEDED.match(raw)
    if fast is not None and raw.endswith(b"}}"):
        message = raw[fast.end() : -2]
        decoded = _decoded(message) if message.startswith(b"{") else _INVALID
        if decoded is not _INVALID:
            try:
                text = message.decode()
            except UnicodeDecodeError:
                pass  # not UTF-8: let the general path reject it
            else:
                return _succeeded(fast.group(1).decode(), text, decoded)
    try:
        return _parsed_line(raw)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        return unreadable_line(raw, exc)


def _parsed_line(raw: bytes) -> ProviderResult:
    """The general path of :func:`parse_result_line`; raises on anything it cannot read."""
    data = strict_loads(raw)
    custom_id = data["custom_id"]
    if not isinstance(custom_id, str) or not CUSTOM_ID_PATTERN.fullmatch(custom_id):
        raise TypeError("custom_id must be a string matching ^[A-Za-z0-9_-]{1,64}$")
    result: dict[str, Any] = data["result"]
    status = anthropic_item_status(result["type"])
    if result["type"] == "succeeded":
        return _succeeded(custom_id, _compact_json(result["message"]), result["message"])
    if result["type"] == "errored":
        outer = result["error"]
        inner = outer.get("error", outer)
        error = {
            "type": _error_text(inner.get("type"), "api_error"),
            "message": _error_text(inner.get("message"), ""),
        }
    else:
        error = dict(_UNPROCESSED[status])
    return ProviderResult(custom_id, status, None, error)
