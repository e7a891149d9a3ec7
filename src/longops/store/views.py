"""Rows as the public objects of the REST contract (Batch, Job, Item, result lines)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import RowMapping

from longops.domain.prices import PriceTable, decimal_text
from longops.domain.schemas import (
    Batch,
    CallbackSummary,
    Cost,
    ErrorDetail,
    Item,
    Job,
    Progress,
    ProviderBatchView,
    RequestCounts,
    UsageCounts,
)
from longops.domain.statuses import ProviderBatchStatus
from longops.domain.usage import USAGE_FIELDS, Usage
from longops.store.usage import UsageSum

LLM_BATCH = "llm_batch"


def request_counts(job: Mapping[Any, Any]) -> RequestCounts:
    final = job["n_succeeded"] + job["n_errored"] + job["n_cancelled"] + job["n_expired"]
    return RequestCounts(
        total=job["n_total"],
        processing=job["n_total"] - final,
        succeeded=job["n_succeeded"],
        errored=job["n_errored"],
        cancelled=job["n_cancelled"],
        expired=job["n_expired"],
    )


def _callback(job: Mapping[Any, Any]) -> CallbackSummary:
    return CallbackSummary(
        sent_at=job["callback_sent_at"],
        status_code=job["callback_status_code"],
        error=job["callback_error"],
        attempts=job["callback_attempts"],
    )


def _error(value: Any) -> ErrorDetail | None:
    return ErrorDetail.model_validate(value) if value else None


def provider_batch_view(row: Mapping[Any, Any]) -> ProviderBatchView:
    return ProviderBatchView(
        id=row["id"],
        provider_batch_id=row["provider_batch_id"],
        status=row["status"],
        processing_status=row["processing_status"],
        request_count=row["request_count"],
        last_polled_at=row["last_polled_at"],
        error=_error(row["error"]),
        submit_attempts=row["submit_attempts"],
        next_action_at=None if ProviderBatchStatus(row["status"]).is_terminal else row["next_action_at"],
    )


def cost_view(prices: PriceTable, usage: Iterable[tuple[str, str, Usage]]) -> Cost:
    """The exact cost of (provider, model, usage) triples at ``prices``; models without a price (and
    some usage) are listed instead. ``basis`` is null when the triples mix native and emulated."""
    amount, unpriced, bases = Decimal(0), set(), set()
    for provider, model, tokens in usage:
        basis = prices.basis_of(provider)
        bases.add(basis)
        row = prices.find(provider, prices.protocol_of(provider), model)
        if row is not None:
            amount += row.cost(tokens, basis)
        elif tokens != Usage():
            unpriced.add(model)
    return Cost(
        amount=decimal_text(amount),
        basis=bases.pop() if len(bases) == 1 else None,
        unpriced_models=sorted(unpriced),
    )


def usage_counts(usage: Usage) -> UsageCounts:
    return UsageCounts(**usage.as_dict())


def batch_view(
    job: Mapping[Any, Any],
    provider_batches: Iterable[Mapping[Any, Any]],
    usage: Mapping[str, UsageSum],
    prices: PriceTable,
) -> Batch:
    """``usage``: the batch's usage by model (:func:`longops.store.usage.batch_usage_by_model`)."""
    provider = job["provider"]
    total = sum((summed.usage for summed in usage.values()), Usage())
    priced = [(provider, model, summed.usage) for model, summed in usage.items()]
    return Batch(
        id=job["id"],
        status=job["status"],
        provider=job["provider"],
        endpoint=job["endpoint"],
        created_at=job["created_at"],
        updated_at=job["updated_at"],
        started_at=job["started_at"],
        completed_at=job["completed_at"],
        expires_at=job["expires_at"],
        cancel_requested_at=job["cancel_requested_at"],
        request_counts=request_counts(job),
        metadata=job["metadata"] or {},
        callback_url=job["callback_url"],
        callback=_callback(job),
        provider_batches=[provider_batch_view(pb) for pb in provider_batches],
        stop_reason=job["stop_reason"],
        error=_error(job["error"]),
        usage=usage_counts(total),
        cost=cost_view(prices, priced) if priced else Cost(basis=prices.basis_of(provider)),
    )


def job_view(job: Mapping[Any, Any]) -> Job:
    if job["job_type"] == LLM_BATCH:
        counts = request_counts(job)
        progress: Progress | None = Progress(
            completed=counts.total - counts.processing, total=counts.total, message=None
        )
        job_input: Any = {"provider": job["provider"], "request_count": counts.total}
        result: Any = (
            counts.model_dump() if job["status"] in ("completed", "failed", "expired", "cancelled") else None
        )
    else:
        progress = Progress.model_validate(job["progress"]) if job["progress"] else None
        job_input, result = job["input"], job["result"]
    return Job(
        id=job["id"],
        job_type=job["job_type"],
        status=job["status"],
        input=job_input,
        result=result,
        error=_error(job["error"]),
        progress=progress,
        attempts=job["attempts"],
        metadata=job["metadata"] or {},
        callback_url=job["callback_url"],
        callback=_callback(job),
        created_at=job["created_at"],
        updated_at=job["updated_at"],
        started_at=job["started_at"],
        completed_at=job["completed_at"],
        cancel_requested_at=job["cancel_requested_at"],
        stop_reason=job["stop_reason"],
    )


def item_view(row: Mapping[Any, Any], provider: str, prices: PriceTable) -> Item:
    """An item row (with its usage columns) of a batch of ``provider``."""
    usage = None if row["input_tokens"] is None else Usage(*(row[name] or 0 for name in USAGE_FIELDS))
    cost = None
    if usage == Usage():
        cost = "0"
    elif usage is not None and row["model"] is not None:
        price = prices.find(provider, prices.protocol_of(provider), row["model"])
        cost = decimal_text(price.cost(usage, prices.basis_of(provider))) if price is not None else None
    return Item(
        id=row["id"],
        custom_id=row["custom_id"],
        status=row["status"],
        provider_batch_id=row["provider_batch_id"],
        response=json.loads(row["response"]) if row["response"] is not None else None,
        error=_error(row["error"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        usage=usage_counts(usage) if usage is not None else None,
        cost=cost,
    )


def result_line(row: RowMapping | Mapping[Any, Any]) -> str:
    """One NDJSON results line, built around the stored response text without re-parsing it."""
    response = row["response"] if row["response"] is not None else "null"
    error = json.dumps(row["error"], separators=(",", ":")) if row["error"] else "null"
    custom_id = json.dumps(row["custom_id"])
    return f'{{"custom_id":{custom_id},"status":"{row["status"]}","response":{response},"error":{error}}}\n'


def group_by_job(rows: Sequence[Mapping[Any, Any]]) -> dict[str, list[Mapping[Any, Any]]]:
    grouped: dict[str, list[Mapping[Any, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["job_id"], []).append(row)
    return grouped
