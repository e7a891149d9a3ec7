"""``GET /v1/providers``: the providers this server can use, by name, with their protocol and endpoints."""

from __future__ import annotations

from fastapi import APIRouter

from longops.api.deps import State
from longops.domain.schemas import ProviderInfo, ProviderList

router = APIRouter(prefix="/v1/providers", tags=["providers"])


@router.get("", response_model=ProviderList)
async def list_providers(state: State) -> ProviderList:
    """Every provider a batch may name, in name order: ``batch`` is ``native`` when the provider
    runs the batch, ``emulated`` when longops sends each request itself; ``endpoints[0]`` is the
    default ``endpoint`` of a new batch."""
    return ProviderList(
        data=[
            ProviderInfo(
                name=spec.name, protocol=spec.protocol.value, batch=spec.batch, endpoints=list(spec.endpoints)
            )
            for spec in sorted(state.providers.values(), key=lambda spec: spec.name)
        ]
    )
