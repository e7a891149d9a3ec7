"""What each SDK call sends (DESIGN §5 "REST"), shared by the sync and async clients."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

from longops.client._http import FileBody, RequestSpec, query
from longops.domain.schemas import Batch, Delivery, Job

M = TypeVar("M", Batch, Job)


@dataclass(frozen=True, slots=True)
class Collection(Generic[M]):
    """The calls ``/v1/batches`` and ``/v1/jobs`` have in common."""

    path: str
    model: type[M]

    def member(self, id: str) -> str:
        return f"{self.path}/{quote(id, safe='')}"

    def retrieve(self, id: str) -> RequestSpec:
        return RequestSpec("GET", self.member(id))

    def list(self, **filters: str | int | None) -> RequestSpec:
        return RequestSpec("GET", self.path, params=query(**filters))

    def cancel(self, id: str) -> RequestSpec:
        # Cancelling again is answered 200 and changes nothing (DESIGN §5), so a retry is safe.
        return RequestSpec("POST", f"{self.member(id)}/cancel")

    def deliveries(self, id: str) -> RequestSpec:
        return RequestSpec("GET", f"{self.member(id)}/deliveries")

    def redeliver(self, id: str) -> RequestSpec:
        # Each redelivery queues the event once more: a resend after an unknown outcome could deliver
        # it an extra time, so only provably unsent attempts are retried.
        return RequestSpec("POST", f"{self.member(id)}/deliveries/redeliver", retryable=False)


BATCHES = Collection("/v1/batches", Batch)
JOBS = Collection("/v1/jobs", Job)
FILES_PATH = "/v1/files"
PROVIDERS_PATH = "/v1/providers"
USAGE_PATH = "/v1/usage"
INGEST_JOB_TYPE = "batch_ingest"


class DeliveryList(BaseModel):
    """The body of ``GET …/deliveries``."""

    data: list[Delivery]


def _create_body(
    provider: str,
    requests: Iterable[Mapping[str, Any]],
    metadata: Mapping[str, Any] | None,
    callback_url: str | None,
    endpoint: str | None,
) -> dict[str, Any]:
    body = _with_options(
        {"provider": provider, "requests": [dict(r) for r in requests]}, metadata, callback_url
    )
    if endpoint is not None:
        body["endpoint"] = endpoint
    return body


def create_batch(
    provider: str,
    requests: Iterable[Mapping[str, Any]],
    metadata: Mapping[str, Any] | None,
    callback_url: str | None,
    idempotency_key: str | None,
    endpoint: str | None = None,
) -> RequestSpec:
    """The key is fixed here, once per call, so every retry of the call carries the same one and the
    server answers a resend with the batch it already created instead of creating a second one."""
    body = _create_body(provider, requests, metadata, callback_url, endpoint)
    key = idempotency_key or str(uuid.uuid4())
    return RequestSpec("POST", BATCHES.path, body=body, headers={"Idempotency-Key": key})


def estimate_batch(
    provider: str,
    requests: Iterable[Mapping[str, Any]],
    metadata: Mapping[str, Any] | None,
    callback_url: str | None,
    endpoint: str | None = None,
) -> RequestSpec:
    """``POST /v1/batches/estimate``: the create body; stores nothing, so a resend is harmless."""
    body = _create_body(provider, requests, metadata, callback_url, endpoint)
    return RequestSpec("POST", f"{BATCHES.path}/estimate", body=body)


def list_usage(
    start: str | date | datetime | None,
    end: str | date | datetime | None,
    group_by: Iterable[str] | str | None,
) -> RequestSpec:
    """``GET /v1/usage``; dates and times are sent in ISO 8601, ``group_by`` comma-separated."""
    keys = group_by if isinstance(group_by, str) or group_by is None else ",".join(group_by)
    params = query(start=_iso(start), end=_iso(end), group_by=keys)
    return RequestSpec("GET", USAGE_PATH, params=params)


def list_providers() -> RequestSpec:
    """``GET /v1/providers``."""
    return RequestSpec("GET", PROVIDERS_PATH)


def _iso(value: str | date | datetime | None) -> str | None:
    return value.isoformat() if isinstance(value, date | datetime) else value


def create_job(
    job_type: str,
    input: Any,
    metadata: Mapping[str, Any] | None,
    callback_url: str | None,
    idempotency_key: str | None,
) -> RequestSpec:
    """As for batches: one key per call, so a resend is answered with the job already created."""
    body = _with_options({"job_type": job_type, "input": input}, metadata, callback_url)
    key = idempotency_key or str(uuid.uuid4())
    return RequestSpec("POST", JOBS.path, body=body, headers={"Idempotency-Key": key})


def ingest_input(
    file_id: str,
    provider: str,
    metadata: Mapping[str, Any] | None,
    callback_url: str | None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """The input of a ``batch_ingest`` job; ``endpoint``, ``metadata`` and ``callback_url`` are the
    batch's."""
    body = _with_options({"file_id": file_id, "provider": provider}, metadata, callback_url)
    if endpoint is not None:
        body["endpoint"] = endpoint
    return body


def upload_file(
    path: str | os.PathLike[str], filename: str | None, on_progress: Callable[[int], object] | None
) -> RequestSpec:
    """``POST /v1/files`` with the file's bytes as the body. A file that cannot be read is an
    ``OSError`` here, before anything is sent. Not resent after an unknown outcome: that would upload
    the whole file again (and leave an orphan behind)."""
    source = Path(path)
    with source.open("rb") as handle:  # a directory or an unreadable file fails here
        size = os.fstat(handle.fileno()).st_size
    params = query(filename=filename if filename is not None else source.name)
    body = FileBody(source, size, on_progress)
    return RequestSpec("POST", FILES_PATH, params=params, file=body, retryable=False)


def retrieve_file(id: str) -> RequestSpec:
    return RequestSpec("GET", f"{FILES_PATH}/{quote(id, safe='')}")


def batch_items(id: str, status: str | None, limit: int | None, after: str | None) -> RequestSpec:
    params = query(status=status, limit=limit, after=after)
    return RequestSpec("GET", f"{BATCHES.member(id)}/items", params=params)


def batch_results(id: str) -> RequestSpec:
    return RequestSpec("GET", f"{BATCHES.member(id)}/results", headers={"Accept": "application/x-ndjson"})


def _with_options(
    body: dict[str, Any], metadata: Mapping[str, Any] | None, callback_url: str | None
) -> dict[str, Any]:
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if callback_url is not None:
        body["callback_url"] = callback_url
    return body
