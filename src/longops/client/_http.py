"""Everything the sync and async clients share about talking HTTP, so the two cannot drift.

The clients themselves only send requests and sleep; what to send (:class:`RequestSpec`), which failures
to retry and for how long to back off (:class:`RetryPolicy`), how to turn an answer into a model or an
exception, and when to poll next while waiting (:class:`PollSchedule`) live here, free of I/O.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pydantic

from longops.client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    IngestError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ValidationError,
)
from longops.domain.schemas import ErrorBody, Job
from longops.domain.statuses import JobStatus

DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_INGEST_TIMEOUT = 6 * 3600.0  # the server bounds a batch_ingest attempt at 6 h
UPLOAD_CHUNK_BYTES = 1024 * 1024
# An upload's socket reads and writes may stall much longer than an ordinary call's: the server
# fsyncs the whole file before it answers.
UPLOAD_TIMEOUT = 1800.0

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

_ERROR_CLASSES: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
}


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Where and how to reach the service; ``None`` arguments fall back to the environment."""

    base_url: str
    api_key: str | None
    timeout: float
    max_retries: int

    @classmethod
    def resolve(
        cls, base_url: str | None, api_key: str | None, timeout: float, max_retries: int
    ) -> ClientConfig:
        url = base_url or os.environ.get("LONGOPS_SERVER_URL") or DEFAULT_SERVER_URL
        key = api_key or os.environ.get("LONGOPS_API_KEY") or None
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        return cls(_checked_url(url), key, timeout, max_retries)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "longops-python"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


def _checked_url(url: str) -> str:
    """The server URL without a trailing slash; a malformed one is a ``ValueError`` here, not a
    confusing transport error on the first call."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"invalid longops server URL {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"invalid longops server URL {url!r}: expected http://HOST[:PORT]")
    return url.rstrip("/")


@dataclass(frozen=True, slots=True)
class FileBody:
    """A file on disk sent as the raw request body, read chunk by chunk while it is sent (never whole).

    ``size`` is sent as ``Content-Length`` (so the server can refuse an oversized file before any byte)
    and bounds what is read; ``on_progress`` gets the bytes handed to the connection so far.
    """

    path: Path
    size: int
    on_progress: Callable[[int], object] | None = None

    def chunks(self) -> Iterator[bytes]:
        sent = 0
        with self.path.open("rb") as handle:
            while sent < self.size:
                chunk = handle.read(min(UPLOAD_CHUNK_BYTES, self.size - sent))
                if not chunk:
                    return
                yield chunk
                sent += len(chunk)
                if self.on_progress is not None:
                    self.on_progress(sent)

    async def achunks(self) -> AsyncIterator[bytes]:
        """The same chunks, read in a worker thread so the event loop never waits for the disk; an
        ``on_progress`` that returns an awaitable is awaited."""
        sent = 0
        handle = await asyncio.to_thread(self.path.open, "rb")
        try:
            while sent < self.size:
                chunk = await asyncio.to_thread(handle.read, min(UPLOAD_CHUNK_BYTES, self.size - sent))
                if not chunk:
                    return
                yield chunk
                sent += len(chunk)
                if self.on_progress is not None:
                    outcome = self.on_progress(sent)
                    if inspect.isawaitable(outcome):
                        await outcome
        finally:
            handle.close()


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One API call. ``retryable``: resending it after an unknown outcome cannot do anything twice.

    The body is ``body`` as JSON, or the file ``file`` streamed from disk (with a long timeout).
    """

    method: str
    path: str
    params: dict[str, str | int] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    retryable: bool = True
    file: FileBody | None = None

    def build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """Built again for each attempt: the same body and headers (the same ``Idempotency-Key``), and
        a file body read from its start again."""
        if self.file is None:
            return client.build_request(
                self.method, self.path, params=self.params, json=self.body, headers=self.headers
            )
        content = self.file.achunks() if isinstance(client, httpx.AsyncClient) else self.file.chunks()
        headers = {
            "Content-Type": "application/octet-stream",
            **self.headers,
            "Content-Length": str(self.file.size),
        }
        return client.build_request(
            self.method,
            self.path,
            params=self.params,
            content=content,
            headers=headers,
            timeout=_long(client.timeout),
        )


def _long(timeout: httpx.Timeout) -> httpx.Timeout:
    """The client's timeout, with reads and writes allowed at least ``UPLOAD_TIMEOUT`` each."""

    def at_least(seconds: float | None) -> float | None:
        return None if seconds is None else max(seconds, UPLOAD_TIMEOUT)

    return httpx.Timeout(
        connect=timeout.connect,
        read=at_least(timeout.read),
        write=at_least(timeout.write),
        pool=timeout.pool,
    )


def query(**params: str | int | None) -> dict[str, str | int]:
    """Query parameters with the unset ones left out."""
    return {name: value for name, value in params.items() if value is not None}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which failures to retry and how long to wait before the next attempt (``None``: give up).

    A call that is not ``retryable`` is retried only when the failure proves the server did nothing:
    the connection was never made, or it answered 429.
    """

    max_retries: int
    base_delay: float = 0.25
    max_delay: float = 8.0

    def after_transport_error(
        self, spec: RequestSpec, exc: httpx.TransportError, attempt: int
    ) -> float | None:
        never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        if attempt >= self.max_retries or not (spec.retryable or never_sent):
            return None
        return self._backoff(attempt)

    def after_status(self, spec: RequestSpec, response: httpx.Response, attempt: int) -> float | None:
        status = response.status_code
        transient = status == 429 or (spec.retryable and status >= 500)
        if attempt >= self.max_retries or not transient:
            return None
        retry_after = _seconds(response.headers.get("retry-after"))
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        return self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        delay: float = min(self.base_delay * 2**attempt, self.max_delay)
        return delay * random.uniform(0.75, 1.0)


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def status_error(response: httpx.Response) -> APIError:
    """The exception for a non-2xx answer (the body must have been read)."""
    status = response.status_code
    error_type, message = _describe(response)
    cls = _ERROR_CLASSES.get(status, InternalServerError if status >= 500 else APIError)
    return cls(message, type=error_type, status_code=status)


def _describe(response: httpx.Response) -> tuple[str, str]:
    """``(type, message)`` from the error envelope, or a best effort when a proxy answered instead."""
    try:
        detail = ErrorBody.model_validate_json(response.content).error
        return detail.type, detail.message
    except pydantic.ValidationError:
        pass
    fallback_type = "internal_error" if response.status_code >= 500 else "http_error"
    try:
        payload = json.loads(response.content)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("detail"), str):
        return fallback_type, payload["detail"]
    text = response.text.strip()[:200] or response.reason_phrase
    return fallback_type, f"HTTP {response.status_code}: {text}"


def transport_error(exc: httpx.TransportError, base_url: str) -> APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(
            f"the longops server at {base_url} did not answer in time ({type(exc).__name__})"
        )
    reason = str(exc) or type(exc).__name__
    return APIConnectionError(f"the longops server isn't reachable at {base_url} ({reason})")


def parse(model: type[ModelT], response: httpx.Response) -> ModelT:
    return parse_json(model, response.content, response.status_code)


def parse_json(model: type[ModelT], content: bytes | str, status_code: int = 200) -> ModelT:
    """Validate a successful answer; one that is not the documented shape is an ``APIError`` too."""
    try:
        return model.model_validate_json(content)
    except pydantic.ValidationError as exc:
        raise APIError(
            f"unexpected response for {model.__name__}: {exc.errors()[0]['msg']}",
            type="invalid_response",
            status_code=status_code,
        ) from exc


_LINE = re.compile(r"line (\d+)\b")


def ingested_batch_id(job: Job) -> str:
    """The batch a finished ``batch_ingest`` job created; :class:`IngestError` if it created none."""
    if job.status != JobStatus.COMPLETED:
        if job.error is not None:
            error_type, message = job.error.type, job.error.message
        else:
            error_type, message = (
                job.stop_reason or str(job.status),
                f"batch_ingest job {job.id} ended {job.status}",
            )
        found = _LINE.match(message)
        raise IngestError(message, type=error_type, job=job, line=int(found.group(1)) if found else None)
    batch_id = job.result.get("batch_id") if isinstance(job.result, dict) else None
    if not isinstance(batch_id, str):
        raise APIError(
            f"batch_ingest job {job.id} completed without a batch_id in its result: {job.result!r}",
            type="invalid_response",
        )
    return batch_id


class PollSchedule:
    """When ``wait()`` polls next: every ``poll_interval`` seconds if given, else from 0.5 s growing x1.5
    up to 10 s; never sleeping past the deadline, so the last poll happens at the deadline itself."""

    FIRST = 0.5
    FACTOR = 1.5
    CAP = 10.0

    def __init__(self, timeout: float | None, poll_interval: float | None) -> None:
        if poll_interval is not None and poll_interval <= 0:
            raise ValueError("poll_interval must be > 0")
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._fixed = poll_interval is not None
        self._next = poll_interval if poll_interval is not None else self.FIRST

    def next_delay(self) -> float | None:
        """Seconds to sleep before the next poll, or ``None`` once the deadline has passed."""
        delay = self._next
        if not self._fixed:
            self._next = min(self._next * self.FACTOR, self.CAP)
        if self._deadline is None:
            return delay
        remaining = self._deadline - time.monotonic()
        return min(delay, remaining) if remaining > 0 else None
