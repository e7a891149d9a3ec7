"""The blocking client: ``Client`` with ``client.batches``, ``client.jobs`` and ``client.files``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
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
        self._http = httpx.Client(base_url=config.base_url, headers=config.headers(), timeout=config.timeout)

    def request(self, spec: RequestSpec) -> httpx.Response:
        return self._send(spec, stream=False)

    @contextmanager
    def stream(self, spec: RequestSpec) -> Iterator[httpx.Response]:
        """A successful response whose body is read by the caller; a broken stream is an ``APIError``."""
        response = self._send(spec, stream=True)
        try:
            yield response
        except httpx.TransportError as exc:
            raise transport_error(exc, self.config.base_url) from exc
        finally:
            response.close()

    def _send(self, spec: RequestSpec, *, stream: bool) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.send(spec.build(self._http), stream=stream)
            except httpx.TransportError as exc:
                delay = self._retry.after_transport_error(spec, exc, attempt)
                if delay is None:
                    raise transport_error(exc, self.config.base_url) from exc
            else:
                if response.is_success:
                    return response
                _read_and_close(response)
                delay = self._retry.after_status(spec, response, attempt)
                if delay is None:
                    raise status_error(response)
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self._http.close()


def _read_and_close(response: httpx.Response) -> None:
    try:
        response.read()
    except httpx.TransportError:
        pass  # the status alone decides; the message falls back to the reason phrase
    finally:
        response.close()


def _pages(fetch: Callable[[str | None], Page[T]]) -> Iterator[T]:
    """Every element of every page, following ``last_id`` until ``has_more`` is false."""
    after: str | None = None
    while True:
        page = fetch(after)
        yield from page.data
        if not page.has_more or page.last_id is None:
            return
        after = page.last_id


class _Resource(Generic[M]):
    _collection: Collection[M]

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport

    def retrieve(self, id: str) -> M:
        return parse(self._collection.model, self._transport.request(self._collection.retrieve(id)))

    def cancel(self, id: str) -> M:
        """Request cancellation; the answer is ``cancelled`` at once, or still ``running`` with
        ``cancel_requested_at`` set until the provider or handler has stopped."""
        return parse(self._collection.model, self._transport.request(self._collection.cancel(id)))

    def wait(
        self,
        id: str,
        *,
        timeout: float = 3600,
        on_progress: Callable[[M], object] | None = None,
        poll_interval: float | None = None,
    ) -> M:
        """Poll until a terminal status and return the final object; ``on_progress`` sees every poll.

        Polls every ``poll_interval`` seconds, or with backoff from 0.5 s to 10 s when it is ``None``.
        Raises :class:`WaitTimeout` after ``timeout`` seconds (``math.inf`` waits for ever).
        """
        schedule = PollSchedule(timeout, poll_interval)
        while True:
            current = self.retrieve(id)
            if on_progress is not None:
                on_progress(current)
            if current.status.is_terminal:
                return current
            delay = schedule.next_delay()
            if delay is None:
                raise WaitTimeout(current, timeout)
            time.sleep(delay)

    def deliveries(self, id: str) -> list[Delivery]:
        """Every attempt to deliver its webhook so far, oldest first (empty before the first one)."""
        spec = self._collection.deliveries(id)
        return parse(routes.DeliveryList, self._transport.request(spec)).data

    def redeliver(self, id: str) -> WebhookEventRef:
        """Send its webhook event again (same id and body) with a fresh attempt budget; ``ConflictError``
        while it has not ended, ``NotFoundError`` when it has no ``callback_url``."""
        return parse(WebhookEventRef, self._transport.request(self._collection.redeliver(id)))


class Files:
    """``/v1/files``: files uploaded for the server to read, e.g. a JSONL batch file to ingest."""

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport

    def upload(
        self,
        path: str | os.PathLike[str],
        filename: str | None = None,
        *,
        on_progress: Callable[[int], object] | None = None,
    ) -> FileObject:
        """Upload a file, streamed from disk in chunks (memory stays flat for any size).

        ``filename`` defaults to the file's name; ``on_progress`` gets the bytes sent so far. Reads and
        writes may wait up to 30 minutes each (the server stores the whole file before it answers).
        A file that cannot be read raises ``OSError`` before anything is sent.
        """
        spec = routes.upload_file(path, filename, on_progress)
        return parse(FileObject, self._transport.request(spec))

    def retrieve(self, id: str) -> FileObject:
        return parse(FileObject, self._transport.request(routes.retrieve_file(id)))


class Batches(_Resource[Batch]):
    """``/v1/batches``: LLM requests run through a provider's batch API."""

    _collection = routes.BATCHES

    def __init__(self, transport: _Transport) -> None:
        super().__init__(transport)
        self._files = Files(transport)
        self._jobs = Jobs(transport)

    def create(
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
        return parse(Batch, self._transport.request(spec))

    def estimate(
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
        return parse(BatchEstimate, self._transport.request(spec))

    @overload
    def create_from_file(
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
    def create_from_file(
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

    def create_from_file(
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
        uploaded = self._files.upload(path, on_progress=on_upload_progress)
        input = routes.ingest_input(uploaded.id, provider, metadata, callback_url, endpoint)
        job = self._jobs.create(job_type=routes.INGEST_JOB_TYPE, input=input)
        if not wait_for_ingest:
            return job
        ended = self._jobs.wait(job.id, timeout=timeout, on_progress=on_progress, poll_interval=poll_interval)
        return self.retrieve(ingested_batch_id(ended))

    def list(
        self, *, status: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Page[Batch]:
        """One page, newest first; pass the page's ``last_id`` as ``after`` for the next."""
        spec = self._collection.list(status=status, limit=limit, after=after)
        return parse(Page[Batch], self._transport.request(spec))

    def list_all(self, *, status: str | None = None, page_size: int | None = None) -> Iterator[Batch]:
        """Every batch, newest first, fetching pages lazily."""
        return _pages(lambda after: self.list(status=status, limit=page_size, after=after))

    def items(
        self, id: str, *, status: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Page[Item]:
        """One page of the batch's items, in request order."""
        return parse(Page[Item], self._transport.request(routes.batch_items(id, status, limit, after)))

    def items_all(
        self, id: str, *, status: str | None = None, page_size: int | None = None
    ) -> Iterator[Item]:
        """Every item of the batch, in request order, fetching pages lazily."""
        return _pages(lambda after: self.items(id, status=status, limit=page_size, after=after))

    def results(self, id: str) -> Iterator[ResultLine]:
        """Each final item's result, streamed line by line (memory stays flat for any batch size)."""
        with self._transport.stream(routes.batch_results(id)) as response:
            for line in response.iter_lines():
                if line.strip():
                    yield parse_json(ResultLine, line)


class Jobs(_Resource[Job]):
    """``/v1/jobs``: generic background jobs (batches appear here too, as ``job_type="llm_batch"``)."""

    _collection = routes.JOBS

    def create(
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
        return parse(Job, self._transport.request(spec))

    def list(
        self,
        *,
        job_type: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Page[Job]:
        """One page, newest first; pass the page's ``last_id`` as ``after`` for the next."""
        spec = self._collection.list(job_type=job_type, status=status, limit=limit, after=after)
        return parse(Page[Job], self._transport.request(spec))

    def list_all(
        self, *, job_type: str | None = None, status: str | None = None, page_size: int | None = None
    ) -> Iterator[Job]:
        """Every job, newest first, fetching pages lazily."""
        return _pages(lambda after: self.list(job_type=job_type, status=status, limit=page_size, after=after))


class Providers:
    """``GET /v1/providers``: the providers this server can use."""

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport

    def list(self) -> ProviderList:
        """Every provider a batch may name, with its protocol, batch kind and endpoints."""
        return parse(ProviderList, self._transport.request(routes.list_providers()))


class Usage:
    """``GET /v1/usage``: the organization's usage and cost by provider, model and UTC day."""

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport

    def list(
        self,
        *,
        start: str | date | datetime | None = None,
        end: str | date | datetime | None = None,
        group_by: Iterable[str] | str | None = None,
    ) -> UsageReport:
        """Rows grouped by any of ``provider``, ``model``, ``day`` (none: one total row); ``start``
        and ``end`` are dates or times (UTC), and a date ``end`` includes its day."""
        return parse(UsageReport, self._transport.request(routes.list_usage(start, end, group_by)))


class Client:
    """Blocking client for a longops server.

    ``base_url`` and ``api_key`` default to ``LONGOPS_SERVER_URL`` (else ``http://127.0.0.1:8000``) and
    ``LONGOPS_API_KEY``. Connection errors, 429 and 5xx are retried up to ``max_retries`` times with
    backoff, for calls that are safe to resend. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self._transport = _Transport(ClientConfig.resolve(base_url, api_key, timeout, max_retries))
        self.batches = Batches(self._transport)
        self.jobs = Jobs(self._transport)
        self.files = Files(self._transport)
        self.usage = Usage(self._transport)
        self.providers = Providers(self._transport)

    @property
    def base_url(self) -> str:
        return self._transport.config.base_url

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
