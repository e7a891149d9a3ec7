"""What each SDK call sends (DESIGN §5 "REST"), shared by the sync and async clients."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from longops.client._http import RequestSpec, query
from longops.domain.schemas import Batch, Job

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


BATCHES = Collection("/v1/batches", Batch)
JOBS = Collection("/v1/jobs", Job)


def create_batch(
    provider: str,
    requests: Iterable[Mapping[str, Any]],
    metadata: Mapping[str, Any] | None,
    callback_url: str | None,
    idempotency_key: str | None,
) -> RequestSpec:
    """The key is fixed here, once per call, so every retry of the call carries the same one and the
    server answers a resend with the batch it already created instead of creating a second one."""
    body = _with_options(
        {"provider": provider, "requests": [dict(r) for r in requests]}, metadata, callback_url
    )
    key = idempotency_key or str(uuid.uuid4())
    return RequestSpec("POST", BATCHES.path, body=body, headers={"Idempotency-Key": key})


def create_job(
    job_type: str, input: Any, metadata: Mapping[str, Any] | None, callback_url: str | None
) -> RequestSpec:
    # No idempotency key on /v1/jobs: a resend could create a second job, so only provably unsent
    # attempts are retried.
    body = _with_options({"job_type": job_type, "input": input}, metadata, callback_url)
    return RequestSpec("POST", JOBS.path, body=body, retryable=False)


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
