"""Usage and cost: ``POST /v1/batches/estimate``, ``GET /v1/usage``, ``GET /v1/prices`` (docs/cost.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from longops.api.deps import Org, State
from longops.api.errors import APIError
from longops.api.offload import OffloadingRoute
from longops.api.routes.batches import BatchCreate, checked_create
from longops.domain.estimate import estimate_batch
from longops.domain.prices import decimal_text
from longops.domain.schemas import BatchEstimate, EstimateCost, Price, PriceList, UsageReport, UsageRow
from longops.domain.usage import USAGE_FIELDS
from longops.domain.usage_query import UsageQueryError, day_range, parse_group_by
from longops.store.usage import DailyUsage, daily_usage
from longops.store.views import cost_view

batch_router = APIRouter(prefix="/v1/batches", tags=["batches"], route_class=OffloadingRoute)
router = APIRouter(prefix="/v1", tags=["usage"])


@batch_router.post("/estimate", response_model=BatchEstimate)
async def estimate(body: BatchCreate, state: State) -> BatchEstimate:
    """What the batch this body would create might cost; validated as ``POST /v1/batches``, nothing stored."""
    _endpoint, parsed = await checked_create(body, state)
    basis = state.prices.basis_of(body.provider)
    result = estimate_batch(
        parsed, state.prices, body.provider, state.prices.protocol_of(body.provider), basis
    )
    return BatchEstimate(
        requests=result.requests,
        estimated_input_tokens=result.estimated_input_tokens,
        max_output_tokens=result.max_output_tokens,
        cost=EstimateCost(low=decimal_text(result.low), high=decimal_text(result.high), basis=basis),
        unpriced_models=list(result.unpriced_models),
    )


@router.get("/usage", response_model=UsageReport)
async def usage(
    state: State,
    org: Org,
    start: Annotated[str | None, Query(description="first day: a date or an ISO time (UTC)")] = None,
    end: Annotated[str | None, Query(description="last day: a date (included) or an ISO time")] = None,
    group_by: Annotated[str | None, Query(description="comma-separated: provider, model, day")] = None,
) -> UsageReport:
    """The caller's organization's usage and cost, from the daily sums written at ingestion."""
    try:
        keys = parse_group_by(group_by)
        first_day, last_day = day_range(start, end)
    except UsageQueryError as exc:
        raise APIError(422, "validation_error", str(exc)) from None
    async with state.db.read() as conn:
        rows = await daily_usage(conn, org, first_day=first_day, last_day=last_day, by_day="day" in keys)
    groups: dict[tuple[str | None, ...], list[DailyUsage]] = {}
    for row in rows:
        key = (
            row.provider if "provider" in keys else None,
            row.model if "model" in keys else None,
            row.day.isoformat() if row.day is not None else None,
        )
        groups.setdefault(key, []).append(row)
    return UsageReport(
        data=[_usage_row(key, members, state) for key, members in sorted(groups.items(), key=_order)]
    )


def _order(group: tuple[tuple[str | None, ...], list[DailyUsage]]) -> tuple[str, ...]:
    provider, model, day = group[0]
    return (day or "", provider or "", model or "")


def _usage_row(key: tuple[str | None, ...], members: list[DailyUsage], state: State) -> UsageRow:
    provider, model, day = key
    tokens = {name: sum(getattr(m.total.usage, name) for m in members) for name in USAGE_FIELDS}
    return UsageRow(
        provider=provider,
        model=model,
        day=day,
        requests=sum(m.total.requests for m in members),
        **tokens,
        cost=cost_view(state.prices, ((m.provider, m.model, m.total.usage) for m in members)),
    )


@router.get("/prices", response_model=PriceList)
async def prices(state: State) -> PriceList:
    """The price table in force: the bundled rows and ``LONGOPS_PRICES_FILE``'s."""
    return PriceList(data=[Price(**row.as_dict()) for row in state.prices.rows])
