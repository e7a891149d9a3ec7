"""The protocol every provider adapter implements, and the errors it raises.

The engine only ever talks to providers through this protocol. Errors are classified by what they
prove about a *create* call, because that decides whether a resubmission could pay twice:

* :class:`ProviderRejected` — the provider answered and nothing was created (any 4xx except 429).
  Final: the items are errored with the provider's message.
* :class:`ProviderUnavailable` — nothing was created, try again later (connection refused, 429, 529
  overloaded).
* :class:`ProviderOutcomeUnknown` — the request may have been created (timeout after sending, 5xx,
  connection reset). Never resubmit blindly: reconcile through :meth:`Provider.list_recent` first.

For calls other than create, ``Unavailable`` and ``OutcomeUnknown`` both just mean "try again later".
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from longops.domain.provider_status import ProviderPhase
from longops.domain.requests import BatchRequest
from longops.domain.statuses import ItemStatus
from longops.domain.usage import Usage


class ProviderError(Exception):
    def __init__(self, message: str, *, error_type: str = "provider_error", status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.status_code = status_code


class ProviderRejected(ProviderError):
    """The provider refused the request; retrying the same request cannot succeed."""


class ProviderUnavailable(ProviderError):
    """The provider did not act on the request; it is safe to retry later."""


class ProviderOutcomeUnknown(ProviderError):
    """The request may or may not have taken effect."""


class ProviderNotFound(ProviderRejected):
    """The provider does not know this batch id."""


@dataclass(frozen=True, slots=True)
class ProviderBatchInfo:
    provider_batch_id: str
    processing_status: str  # the provider's own word, shown to users as is
    phase: ProviderPhase
    request_count: int
    created_at: datetime
    error: str | None = None
    results_url: str | None = None  # where an ended batch's results are read (if the provider says)


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """One item's outcome. ``response_json``/``error`` are ready to store (JSON text / small dict).

    ``usage`` (normalized with :func:`longops.domain.usage.usage_of_response`) and ``model`` (the
    model the response names) are what this result is counted and priced as; None where the
    result reports none (e.g. an errored request)."""

    custom_id: str
    status: ItemStatus
    response_json: str | None
    error: dict[str, Any] | None
    usage: Usage | None = None
    model: str | None = None


class Provider(Protocol):
    name: str
    max_requests: int
    max_bytes: int
    accepts_openai_lines: bool

    async def create(
        self, requests: Sequence[BatchRequest] | AsyncIterable[BatchRequest]
    ) -> ProviderBatchInfo:
        """Submit one provider batch. Must not retry on its own (see the module docstring).

        ``requests`` may arrive as they are read (the submitter streams them from the database), so
        an adapter should send them as they come rather than collect them."""
        ...

    async def retrieve(self, provider_batch_id: str) -> ProviderBatchInfo: ...

    async def cancel(self, provider_batch_id: str) -> ProviderBatchInfo: ...

    def results(
        self, provider_batch_id: str, *, results_url: str | None = None
    ) -> AsyncIterator[ProviderResult]:
        """Stream the results of an ended batch, one item at a time, with bounded memory.
        ``results_url`` is the :attr:`ProviderBatchInfo.results_url` of a retrieve, when known."""
        ...

    async def list_recent(self, created_after: datetime) -> list[ProviderBatchInfo]:
        """Batches created at or after ``created_after`` (newest first), for reconciliation."""
        ...

    async def aclose(self) -> None: ...
