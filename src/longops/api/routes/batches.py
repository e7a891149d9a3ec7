"""``/v1/batches``: create, list, get, cancel, items and results of LLM batches."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from longops.api.callback_urls import ensure_callback_url_allowed
from longops.api.deps import AppState, Org, State, org_of, state_of
from longops.api.errors import APIError
from longops.api.limits import check_create_fields
from longops.api.offload import OffloadingRoute, off_loop
from longops.domain.requests import BatchRequest, checked_endpoint, parse_requests
from longops.domain.schemas import Batch, Item, Page
from longops.domain.statuses import ItemStatus, JobStatus
from longops.providers.registry import not_configured_reason
from longops.store import jobs as job_store
from longops.store.items import list_item_rows, stream_result_lines
from longops.store.views import LLM_BATCH, item_view

router = APIRouter(prefix="/v1/batches", tags=["batches"], route_class=OffloadingRoute)

Limit = Annotated[int, Query(ge=1, le=1000, description="page size (1–1000)")]


class BatchCreate(BaseModel):
    """Body of ``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(max_length=32, description="provider name, e.g. anthropic or simulator")
    endpoint: str | None = Field(
        None,
        max_length=64,
        description=(
            "the provider endpoint every request is a body for: OpenAI-family providers take "
            "/v1/chat/completions (default), /v1/responses, /v1/embeddings or /v1/completions; "
            "Anthropic-protocol providers take /v1/messages (the default)"
        ),
    )
    requests: list[Any] = Field(
        description='[{"custom_id", "params"}]; params is the provider request body. OpenAI-family '
        'providers also take OpenAI batch lines {"custom_id", "method": "POST", "url", "body"}'
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    callback_url: str | None = None


async def checked_create(body: BatchCreate, state: AppState) -> tuple[str, list[BatchRequest]]:
    """The checks of a create body that need no database (``POST /v1/batches`` and its estimate):
    the provider, the endpoint, the metadata and callback URL limits, every request. Returns the
    batch's endpoint and its requests; raises the 422 naming the field."""
    spec = state.providers.get(body.provider)
    if spec is None:
        raise APIError(
            422, "validation_error", f"provider: {not_configured_reason(body.provider, state.providers)}"
        )
    endpoint = checked_endpoint(body.endpoint, spec.endpoints, spec.name)
    check_create_fields(state.settings, metadata=body.metadata, callback_url=body.callback_url)
    parsed = await off_loop(
        len(body.requests),
        parse_requests,
        body.requests,
        openai_endpoint=endpoint if spec.accepts_openai_lines else None,
        max_requests=state.settings.max_batch_requests,
        max_depth=state.settings.max_json_depth,
    )
    return endpoint, parsed


@router.post("", status_code=201, response_model=Batch)
async def create_batch(
    body: BatchCreate,
    request: Request,
    state: State,
    org: Org,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Batch:
    endpoint, parsed = await checked_create(body, state)
    await ensure_callback_url_allowed(body.callback_url, state.settings)
    new = job_store.NewBatch(
        org_id=org,
        provider=body.provider,
        requests=parsed,
        endpoint=endpoint,
        metadata=body.metadata,
        callback_url=body.callback_url,
        idempotency_key=idempotency_key,
        request_hash=hashlib.sha256(await request.body()).hexdigest() if idempotency_key else None,
    )
    batch_id, _replayed = await job_store.create_batch(state.db, new)
    if state.engine is not None:
        state.engine.wake()
    return await job_store.get_batch(state.db, org, batch_id, state.prices)


@router.get("", response_model=Page[Batch])
async def list_batches(
    state: State,
    org: Org,
    limit: Limit = 20,
    after: str | None = None,
    status: JobStatus | None = None,
    provider: Annotated[str | None, Query(max_length=32)] = None,
) -> Page[Batch]:
    async with state.db.read() as conn:
        rows, has_more = await job_store.list_job_rows(
            conn, org, limit=limit, after=after, job_type=LLM_BATCH, status=status, provider=provider
        )
        data = await job_store.load_batches(conn, rows, state.prices)
    return Page[Batch](data=data, has_more=has_more, last_id=data[-1].id if data else None)


@router.get("/{batch_id}", response_model=Batch)
async def get_batch(batch_id: str, request: Request) -> Batch:
    # What clients poll: the request itself rather than the State and Org dependencies (api.deps).
    state = state_of(request)
    return await job_store.get_batch(state.db, org_of(request), batch_id, state.prices)


@router.post("/{batch_id}/cancel", response_model=Batch)
async def cancel_batch(batch_id: str, state: State, org: Org) -> Batch:
    await job_store.get_batch(state.db, org, batch_id, state.prices)  # 404 for jobs that are not batches
    await job_store.cancel_job(state.db, org, batch_id)
    if state.engine is not None:
        state.engine.wake()
    return await job_store.get_batch(state.db, org, batch_id, state.prices)


@router.get("/{batch_id}/items", response_model=Page[Item])
async def list_items(
    batch_id: str,
    state: State,
    org: Org,
    limit: Limit = 20,
    after: str | None = None,
    status: ItemStatus | None = None,
) -> Page[Item]:
    batch = await job_store.get_batch(state.db, org, batch_id, state.prices)
    async with state.db.read() as conn:
        rows, has_more = await list_item_rows(conn, batch_id, limit=limit, after=after, status=status)
    data = [item_view(row, batch.provider, state.prices) for row in rows]
    return Page[Item](data=data, has_more=has_more, last_id=data[-1].id if data else None)


@router.get(
    "/{batch_id}/results",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "one JSON line per final item"}},
)
async def batch_results(batch_id: str, state: State, org: Org) -> StreamingResponse:
    await job_store.get_batch(state.db, org, batch_id, state.prices)
    return StreamingResponse(stream_result_lines(state.db, batch_id), media_type="application/x-ndjson")
