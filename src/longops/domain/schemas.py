"""Public objects of the REST contract (DESIGN §5), shared by the API and the SDK.

Timestamps are aware UTC datetimes; pydantic serializes them as ISO 8601 ending in ``Z``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from longops.domain.statuses import ItemStatus, JobStatus, ProviderBatchStatus

JsonObject = dict[str, Any]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class RequestCounts(_Model):
    total: int = 0
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    cancelled: int = 0
    expired: int = 0


class CallbackSummary(_Model):
    sent_at: datetime | None = None
    status_code: int | None = None
    error: str | None = None
    attempts: int = 0


class ErrorDetail(_Model):
    type: str
    message: str


class ProviderBatchView(_Model):
    id: str
    provider_batch_id: str | None
    status: ProviderBatchStatus
    processing_status: str | None
    request_count: int
    last_polled_at: datetime | None
    error: ErrorDetail | None = None
    # How the submission goes: attempts to create it at the provider so far, and when the leader next
    # acts on it (submits it again while ``created``, polls it while ``running``); null once it ended.
    submit_attempts: int = 0
    next_action_at: datetime | None = None


class Progress(_Model):
    completed: int | float
    total: int | float | None = None
    message: str | None = None


class UsageCounts(_Model):
    """Tokens, normalized across providers (docs/cost.md): ``input_tokens`` excludes cache reads and
    writes; ``output_tokens`` includes ``reasoning_tokens``."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0


class Cost(_Model):
    """Exact USD (a decimal string, not rounded) of the priced models; the others are listed."""

    amount: str = "0"
    currency: Literal["USD"] = "USD"
    basis: Literal["batch", "live"] | None = None  # null: rows of both kinds summed
    unpriced_models: list[str] = Field(default_factory=list)


class Batch(_Model):
    id: str
    object: Literal["batch"] = "batch"
    job_type: Literal["llm_batch"] = "llm_batch"
    status: JobStatus
    provider: str
    endpoint: str | None = None  # the provider endpoint every request is a body for
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    expires_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    request_counts: RequestCounts
    metadata: JsonObject = Field(default_factory=dict)
    callback_url: str | None = None
    callback: CallbackSummary = Field(default_factory=CallbackSummary)
    provider_batches: list[ProviderBatchView] = Field(default_factory=list)
    stop_reason: str | None = None
    error: ErrorDetail | None = None
    usage: UsageCounts = Field(default_factory=UsageCounts)  # summed over items, as results arrive
    cost: Cost = Field(default_factory=Cost)

    def waiting_on(self) -> str | None:
        """Why an unfinished batch is not moving, in one line, from its provider batches: a submission
        the leader retries (the provider's reason, the attempt, when the next one is due), a poll that
        failed, or nothing sent yet. ``None`` once it has ended or while every part runs normally."""
        if self.status.is_terminal:
            return None
        if not self.provider_batches:
            return "not submitted yet: waiting for the leader to plan it"
        for pb in self.provider_batches:
            due = f"; next at {pb.next_action_at:%H:%M:%SZ}" if pb.next_action_at is not None else ""
            if pb.error is not None and pb.status == ProviderBatchStatus.CREATED:
                return (
                    f"submission retrying after attempt {pb.submit_attempts}: "
                    f"{pb.error.type}: {pb.error.message}{due}"
                )
            if pb.error is not None and pb.status == ProviderBatchStatus.RUNNING:
                return f"polling retrying: {pb.error.type}: {pb.error.message}{due}"
        if all(pb.status == ProviderBatchStatus.CREATED for pb in self.provider_batches):
            return "not sent to the provider yet"
        return None


class ProviderInfo(_Model):
    """One provider this server can use (``GET /v1/providers``)."""

    name: str
    protocol: Literal["anthropic", "openai", "openai_compatible"]
    batch: Literal["native", "emulated"]
    endpoints: list[str]


class ProviderList(_Model):
    """``GET /v1/providers``."""

    data: list[ProviderInfo]


class Job(_Model):
    id: str
    object: Literal["job"] = "job"
    job_type: str
    status: JobStatus
    input: Any = None
    result: Any = None
    error: ErrorDetail | None = None
    progress: Progress | None = None
    attempts: int = 0
    metadata: JsonObject = Field(default_factory=dict)
    callback_url: str | None = None
    callback: CallbackSummary = Field(default_factory=CallbackSummary)
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    stop_reason: str | None = None


class FileObject(_Model):
    """An uploaded file (``POST /v1/files``), e.g. the JSONL input of a ``batch_ingest`` job."""

    id: str
    object: Literal["file"] = "file"
    filename: str | None = None
    bytes: int
    sha256: str
    created_at: datetime


class Item(_Model):
    id: str
    object: Literal["batch_item"] = "batch_item"
    custom_id: str
    status: ItemStatus
    provider_batch_id: str | None = None
    response: Any = None
    error: ErrorDetail | None = None
    attempts: int = 0
    created_at: datetime
    updated_at: datetime
    usage: UsageCounts | None = None  # null before any result; summed over attempts
    cost: str | None = None  # USD, exact; null before any result or when the model has no price


class EstimateCost(_Model):
    low: str
    high: str
    currency: Literal["USD"] = "USD"
    basis: Literal["batch", "live"]


class BatchEstimate(_Model):
    """``POST /v1/batches/estimate``: what a batch would cost (docs/cost.md "The estimate")."""

    object: Literal["batch_estimate"] = "batch_estimate"
    requests: int
    estimated_input_tokens: int
    max_output_tokens: int
    cost: EstimateCost
    unpriced_models: list[str] = Field(default_factory=list)


class UsageRow(UsageCounts):
    """One group of ``GET /v1/usage``; a key not grouped by is null."""

    provider: str | None = None
    model: str | None = None
    day: str | None = None  # YYYY-MM-DD, UTC
    requests: int = 0
    cost: Cost = Field(default_factory=Cost)


class UsageReport(BaseModel):
    object: Literal["usage_report"] = "usage_report"
    data: list[UsageRow]


class Price(_Model):
    """One row of the price table in force (USD per million tokens at live prices)."""

    provider: str
    model: str
    input: str
    output: str
    cache_read: str
    cache_write: str
    batch_discount: str
    as_of: str | None = None
    source: str | None = None


class PriceList(BaseModel):
    data: list[Price]


class ResultLine(_Model):
    custom_id: str
    status: ItemStatus
    response: Any = None
    error: ErrorDetail | None = None


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool
    last_id: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Delivery(_Model):
    """One attempt to deliver a job's webhook (``GET /v1/batches/{id}/deliveries``), oldest first."""

    attempt: int
    at: datetime
    status_code: int | None = None
    error: str | None = None  # set on every attempt that did not get a 2xx
    duration_ms: int | None = None


class WebhookEventRef(_Model):
    """A job's webhook event as queued again by ``POST …/deliveries/redeliver``."""

    id: str
    object: Literal["webhook_event"] = "webhook_event"
    type: str
    state: str
    attempts: int
    next_attempt_at: datetime | None = None
