"""The asyncio client: ``AsyncClient``, the awaited twin of :class:`longops.client.sync.Client`.

Same names and rules; the differences are ``await``, ``async for`` over ``results()`` and the ``*_all``
iterators, and an ``on_progress`` callback for ``wait()`` that may be a coroutine function.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import date, datetime
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, overload

import httpx

from longops.client import _routes as routes
from longops.client._http import (
    DEFAULT_INGEST_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ClientConfig,
    PollSchedule,
    RequestSpec,
    RetryPolicy,
    ingested_batch_id,
    parse,
    parse_json,
    status_error,
    transport_error,
)
from longops.client._routes import Collection, M
from longops.client.errors import WaitTimeout
from longops.domain.schemas import (
    Batch,
    BatchEstimate,
    Delivery,
    FileObject,
    Item,
    Job,
    Page,
    ProviderList,
    ResultLine,
    UsageReport,
    WebhookEventRef,
)

T = TypeVar("T")


class _Transport:
    """Sends a :class:`RequestSpec`, retrying per the policy; raises ``APIError`` for any failure."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._retry = RetryPolicy(config.max_retries)
        self._http = httpx.AsyncClient(
            base_url=config.base_url, headers=config.headers(), timeout=config.timeout
        )

    async def request(self, spec: RequestSpec) -> httpx.Response:
        return await self._send(spec, stream=False)

    @asynccontextmanager
    async def stream(self, spec: RequestSpec) -> AsyncIterator[httpx.Response]:
        """A successful response whose body is read by the caller; a broken stream is an ``APIError``."""
        response = await self._send(spec, stream=True)
        try:
            yield response
        except httpx.TransportError as exc:
            raise transport_error(exc, self.config.base_url) from exc
        finally:
            await response.aclose()

    async def _send(self, spec: RequestSpec, *, stream: bool) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.send(spec.build(self._http), stream=stream)
            except httpx.TransportError as exc:
                delay = self._retry.after_transport_error(spec, exc, attempt)
                if delay is None:
                    raise transport_error(exc, self.config.base_url) from exc
            else:
                if response.is_success:
                    return response
                await _read_and_close(response)
                delay = self._retry.after_status(spec, response, attempt)
                if delay is None:
                    raise status_error(response)
            await asyncio.sleep(delay)
            attempt += 1

    async def close(self) -> None:
        await self._http.aclose()


async def _read_and_close(response: httpx.Response) -> None:
    try:
        await response.aread()
    except httpx.TransportError:
        pass  # the status alone decides; the message falls back to the reason phrase
    finally:
        await response.aclose()


async def _pages(fetch: Callable[[str | None], Awaitable[Page[T]]]) -> AsyncIterator[T]:
    """Every element of every page, following ``last_id`` until ``has_more`` is false."""
    after: str | None = None
    while True:
        page = await fetch(after)
        for element in page.data:
            yield element
        if not page.has_more or page.last_id is None:
            return
        after = page.last_id


class _Resource(Generic[M]):
    _collection: Collection[M]

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport

    async def retrieve(self, id: str) -> M:
        return parse(self._collection.model, await self._transport.request(self._collection.retrieve(id)))

    async def cancel(self, id: str) -> M:
        """Request cancellation; the answer is ``cancelled`` at once, or still ``running`` with
        ``cancel_requested_at`` set until the provider or handler has stopped."""
        return parse(self._collection.model, await self._transport.request(self._collection.cancel(id)))

    async def wait(
        self,
        id: str,
        *,
        timeout: float = 3600,
        on_progress: Callable[[M], object] | None = None,
        poll_interval: float | None = None,
    ) -> M:
        """Poll until a terminal status and return the final object; ``on_progress`` (a function or a
        coroutine function) sees every poll.

        Polls every ``poll_interval`` seconds, or with backoff from 0.5 s to 10 s when it is ``None``.
        Raises :class:`WaitTimeout` after ``timeout`` seconds (``math.inf`` waits for ever).
        """
        schedule = PollSchedule(timeout, poll_interval)
        while True:
            current = await self.retrieve(id)
            if on_progress is not None:
                outcome = on_progress(current)
                if inspect.isawaitable(outcome):
                    await outcome
            if current.status.is_terminal:
                return current
            delay = schedule.next_delay()
            if delay is None:
                raise WaitTimeout(current, timeout)
            await asyncio.sleep(delay)

    async def deliveries(self, id: str) -> list[Delivery]:
        """Every attempt to deliver its webhook so far, oldest first (empty before the first one)."""
        spec = self._collection.deliveries(id)
        return parse(routes.DeliveryList, await self._transport.request(spec)).data

    async def redeliver(self, id: str) -> WebhookEventRef:
        """Send its webhook event again (same id and body) with a fresh attempt budget; ``ConflictError``
        while it has not ended, ``NotFoundError`` when it has no ``callback_url``."""
        return parse(WebhookEventRef, await self._transport.request(self._collection.redeliver(id)))


class AsyncFiles:
    """``/v1/files``: files uploaded for the server to read, e.g. a JSONL batch file to ingest."""

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport

    async def upload(
        self,
        path: str | os.PathLike[str],
        filename: str | None = None,
        *,
        on_progress: Callable[[int], object] | None = None,
    ) -> FileObject:
        """Upload a file, streamed from disk in chunks read in a worker thread (memory stays flat).

        ``filename`` defaults to the file's name; ``on_progress`` (a function or a coroutine function)
        gets the bytes sent so far. Reads and writes may wait up to 30 minutes each (the server stores
        the whole file before it answers). A file that cannot be read raises ``OSError`` before
        anything is sent.
        """
        spec = await asyncio.to_thread(routes.upload_file, path, filename, on_progress)
        return parse(FileObject, await self._transport.request(spec))

    async def retrieve(self, id: str) -> FileObject:
        return parse(FileObject, await self._transport.request(routes.retrieve_file(id)))


class AsyncBatches(_Resource[Batch]):
    """``/v1/batches``: LLM requests run through a provider's batch API."""

    _collection = routes.BATCHES

    def __init__(self, transport: _Transport) -> None:
        super().__init__(transport)
        self._files = AsyncFiles(transport)
        self._jobs = AsyncJobs(transport)

    async def create(
        self,
        *,
        provider: str,
        requests: Iterable[Mapping[str, Any]],
        endpoint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        """Create a batch. Without ``idempotency_key`` one is generated for this call, so the SDK's own
        retries never create a second batch; pass your own to make your retries safe too."""
        spec = routes.create_batch(provider, requests, metadata, callback_url, idempotency_key, endpoint)
        return parse(Batch, await self._transport.request(spec))

    async def estimate(
        self,
        *,
        provider: str,
        requests: Iterable[Mapping[str, Any]],
        metadata: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        endpoint: str | None = None,
    ) -> BatchEstimate:
        """What the batch ``create`` would make with these arguments might cost; nothing is stored."""
        spec = routes.estimate_batch(provider, requests, metadata, callback_url, endpoint)
        return parse(BatchEstimate, await self._transport.request(spec))

    @overload
    async def create_from_file(
        self,
        path: str | os.PathLike[str],
        *,
        provider: str,
        endpoint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        wait_for_ingest: Literal[True] = True,
        timeout: float = DEFAULT_INGEST_TIMEOUT,
        poll_interval: float | None = None,
        on_progress: Callable[[Job], object] | None = None,
        on_upload_progress: Callable[[int], object] | None = None,
    ) -> Batch: ...

    @overload
    async def create_from_file(
        self,
        path: str | os.PathLike[str],
        *,
        provider: str,
        endpoint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        wait_for_ingest: Literal[False],
        timeout: float = DEFAULT_INGEST_TIMEOUT,
        poll_interval: float | None = None,
        on_progress: Callable[[Job], object] | None = None,
        on_upload_progress: Callable[[int], object] | None = None,
    ) -> Job: ...

    async def create_from_file(
        self,
        path: str | os.PathLike[str],
        *,
        provider: str,
        endpoint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        wait_for_ingest: bool = True,
        timeout: float = DEFAULT_INGEST_TIMEOUT,
        poll_interval: float | None = None,
        on_progress: Callable[[Job], object] | None = None,
        on_upload_progress: Callable[[int], object] | None = None,
    ) -> Batch | Job:
        """Create a batch from a JSONL file of any size: upload it (streamed, see ``files.upload``), then
        let the server ingest it with a ``batch_ingest`` job, which checks every line.

        Waits for the ingestion (up to ``timeout`` seconds, polling like ``wait()``; ``on_progress``
        sees the job at each poll, its ``progress`` in bytes) and returns the new batch. A bad file
        raises :class:`IngestError` carrying the job's error (``line`` is the first bad line), and no
        batch exists. With ``wait_for_ingest=False`` it returns the ``batch_ingest`` job at once; its
        ``result["batch_id"]`` names the batch once it has completed.
        """
        uploaded = await self._files.upload(path, on_progress=on_upload_progress)
        input = routes.ingest_input(uploaded.id, provider, metadata, callback_url, endpoint)
        job = await self._jobs.create(job_type=routes.INGEST_JOB_TYPE, input=input)
        if not wait_for_ingest:
            return job
        ended = await self._jobs.wait(
            job.id, timeout=timeout, on_progress=on_progress, poll_interval=poll_interval
        )
        return await self.retrieve(ingested_batch_id(ended))

    async def list(
        self, *, status: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Page[Batch]:
        """One page, newest first; pass the page's ``last_id`` as ``after`` for the next."""
        spec = self._collection.list(status=status, limit=limit, after=after)
        return parse(Page[Batch], await self._transport.request(spec))

    def list_all(self, *, status: str | None = None, page_size: int | None = None) -> AsyncIterator[Batch]:
        """Every batch, newest first, fetching pages lazily (``async for``)."""
        return _pages(lambda after: self.list(status=status, limit=page_size, after=after))

    async def items(
        self, id: str, *, status: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Page[Item]:
        """One page of the batch's items, in request order."""
        return parse(Page[Item], await self._transport.request(routes.batch_items(id, status, limit, after)))

    def items_all(
        self, id: str, *, status: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[Item]:
        """Every item of the batch, in request order, fetching pages lazily (``async for``)."""
        return _pages(lambda after: self.items(id, status=status, limit=page_size, after=after))

    async def results(self, id: str) -> AsyncIterator[ResultLine]:
        """Each final item's result, streamed line by line (``async for``; memory stays flat)."""
        async with self._transport.stream(routes.batch_results(id)) as response:
            async for line in response.aiter_lines():
                if line.strip():
                    yield parse_json(ResultLine, line)


class AsyncJobs(_Resource[Job]):
    """``/v1/jobs``: generic background jobs (batches appear here too, as ``job_type="llm_batch"``)."""

    _collection = routes.JOBS

    async def create(
        self,
        *,
        job_type: str,
        input: Any = None,
        metadata: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Create a job. Without ``idempotency_key`` one is generated for this call, so the SDK's own
        retries never create a second job; pass your own to make your retries safe too."""
        spec = routes.create_job(job_type, input, metadata, callback_url, idempotency_key)
        return parse(Job, await self._transport.request(spec))

    async def list(
        self,
        *,
        job_type: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Page[Job]:
        """One page, newest first; pass the page's ``last_id`` as ``after`` for the next."""
        spec = self._collection.list(job_type=job_type, status=status, limit=limit, after=after)
        return parse(Page[Job], await self._transport.request(spec))

    def list_all(
        self, *, job_type: str | None = None, status: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[Job]:
        """Every job, newest first, fetching pages lazily (``async for``)."""
        return _pages(lambda after: self.list(job_type=job_type, status=status, limit=page_size, after=after))


class AsyncProviders:
    """``GET /v1/providers``: the providers this server can use."""

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport

    async def list(self) -> ProviderList:
        """Every provider a batch may name, with its protocol, batch kind and endpoints."""
        return parse(ProviderList, await self._transport.request(routes.list_providers()))


class AsyncUsage:
    """``GET /v1/usage``: the organization's usage and cost by provider, model and UTC day."""

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport

    async def list(
        self,
        *,
        start: str | date | datetime | None = None,
        end: str | date | datetime | None = None,
        group_by: Iterable[str] | str | None = None,
    ) -> UsageReport:
        """Rows grouped by any of ``provider``, ``model``, ``day`` (none: one total row); ``start``
        and ``end`` are dates or times (UTC), and a date ``end`` includes its day."""
        return parse(UsageReport, await self._transport.request(routes.list_usage(start, end, group_by)))


class AsyncClient:
    """Asyncio client for a longops server; same configuration and retry rules as ``Client``.

    Use as ``async with AsyncClient() as client:``, or ``await client.close()``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self._transport = _Transport(ClientConfig.resolve(base_url, api_key, timeout, max_retries))
        self.batches = AsyncBatches(self._transport)
        self.jobs = AsyncJobs(self._transport)
        self.files = AsyncFiles(self._transport)
        self.usage = AsyncUsage(self._transport)
        self.providers = AsyncProviders(self._transport)

    @property
    def base_url(self) -> str:
        return self._transport.config.base_url

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
