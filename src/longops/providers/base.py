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

The shape of a submission is the adapter's business, not the engine's. The engine hands
:meth:`Provider.create` a :class:`Submission` (our provider batch id as ``reference``, the batch's
``endpoint``, the counts) and the requests as a lazy stream; an adapter whose provider takes the
requests somewhere first (OpenAI and Gemini: a file; Bedrock: object storage) puts them there,
reports what it *staged* through ``on_staged`` (stored durably before the create call, so a crash
or an unknown outcome can still clean up through :meth:`Provider.discard` once reconciliation has
shown the batch was never created), then creates the batch.

The ended batch's results are read from wherever the provider keeps them (one results URL, an
output and an error file, an object-storage prefix): :meth:`Provider.results` takes the whole
:class:`ProviderBatchInfo` of the retrieve that saw it end, and :meth:`Provider.release` deletes
what is left at the provider once the results are stored. Reconciliation matches a provider's
batches by the ``reference`` the adapter tagged them with when the provider keeps such a tag
(:attr:`Provider.tags_batches`); otherwise by creation window and request count.

A results stream never fails because of one line: a line an adapter cannot read becomes the error of
the item it names (:func:`unreadable_result`, ``invalid_results_line``), or, when it names none, an
:class:`UnreadableLine` the engine counts and logs; the item left without a result then ends
``errored`` with ``missing_result``, like any item the provider returned nothing for.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from longops.domain.provider_status import ProviderPhase
from longops.domain.requests import BatchRequest
from longops.domain.results import (
    ProviderResult,
    UnreadableLine,
)


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
    # The reference (our provider batch id) the adapter tagged the batch with, when the provider
    # keeps one (OpenAI metadata); None otherwise.
    reference: str | None = None
    # Where the provider keeps this batch's input and results (a results URL, file ids): read by
    # the same adapter's ``results`` and ``release``, opaque to the engine.
    handles: Mapping[str, str] = field(default_factory=dict)


Requests = Sequence[BatchRequest] | AsyncIterable[BatchRequest]
OnStaged = Callable[[Mapping[str, str]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Submission:
    """One provider batch to create."""

    reference: str  # our provider batch id (``pb_…``), unique per submission
    endpoint: str  # the batch's endpoint, e.g. /v1/messages or /v1/chat/completions
    request_count: int


async def no_staging(staged: Mapping[str, str]) -> None:
    """An ``on_staged`` for callers that keep nothing (tests, tools)."""


class Provider(Protocol):
    name: str
    max_requests: int
    max_bytes: int
    # Whether the provider keeps the adapter's ``reference`` on each batch, so reconciliation can
    # match exactly (ProviderBatchInfo.reference) instead of by creation window and request count.
    tags_batches: bool

    async def create(
        self, submission: Submission, requests: Requests, on_staged: OnStaged
    ) -> ProviderBatchInfo:
        """Submit one provider batch. Must not retry on its own (see the module docstring).

        ``requests`` may arrive as they are read (the submitter streams them from the database), so
        an adapter should send them as they come rather than collect them. An adapter that stages
        the input first awaits ``on_staged(handles)`` before it creates the batch, and deletes what
        it staged itself when the create proves nothing was created (rejected, unavailable)."""
        ...

    async def discard(self, staged: Mapping[str, str]) -> None:
        """Delete what a create staged for a batch that was never created (after reconciliation)."""
        ...

    async def retrieve(self, provider_batch_id: str) -> ProviderBatchInfo: ...

    async def cancel(self, provider_batch_id: str) -> ProviderBatchInfo: ...

    def results(self, info: ProviderBatchInfo) -> AsyncIterator[ProviderResult | UnreadableLine]:
        """Stream the results of an ended batch (``info``: a retrieve that saw it end), one item at a
        time, with bounded memory. Items the provider has no result for are simply not yielded; a
        line that cannot be read is yielded as described in the module docstring, never raised."""
        ...

    async def release(self, info: ProviderBatchInfo) -> None:
        """Delete what the provider still keeps of an ended batch whose results are stored (input,
        output files); a no-op where the provider keeps nothing deletable."""
        ...

    async def list_recent(self, created_after: datetime) -> list[ProviderBatchInfo]:
        """Batches created at or after ``created_after`` (newest first), for reconciliation."""
        ...

    async def aclose(self) -> None: ...


async def each_request(requests: Requests) -> AsyncIterator[BatchRequest]:
    """The requests one at a time, whether they come as a list or as a stream."""
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for request in requests:
            yield request
