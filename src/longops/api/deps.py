"""Request-scoped dependencies: the database, the caller's organization, the engine handle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from longops.api.auth import AUTH_MESSAGE, ORG_SCOPE_KEY, OpenMode
from longops.api.errors import APIError
from longops.domain.prices import PriceTable
from longops.engine.engine import Engine
from longops.engine.metrics import Metrics
from longops.providers.registry import ProviderSpec
from longops.settings import Settings
from longops.store.db import Database
from longops.store.storage import StorageHealth


@dataclass
class AppState:
    settings: Settings
    db: Database
    metrics: Metrics
    providers: dict[str, ProviderSpec]
    prices: PriceTable
    engine: Engine | None = None
    open_mode: OpenMode = field(default_factory=lambda: OpenMode(allowed=False))
    storage: StorageHealth = field(default_factory=StorageHealth)


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.longops
    return state


def org_of(request: Request) -> str:
    """The organization every query of this request is scoped to, as ``api.auth`` established it.

    Fails closed: a route reached without authentication (a path wrongly made public) answers 401.
    """
    org = request.scope.get(ORG_SCOPE_KEY)
    if not isinstance(org, str):
        raise APIError(401, "authentication_error", AUTH_MESSAGE)
    return org


# The dependencies are async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop
# on every request. A route that clients poll may call ``state_of``/``org_of`` on its ``Request``
# instead: FastAPI's resolution of each dependency costs 2–3 % of a one-row read's CPU.
async def app_state(request: Request) -> AppState:
    return state_of(request)


async def caller_org(request: Request) -> str:
    return org_of(request)


State = Annotated[AppState, Depends(app_state)]
Org = Annotated[str, Depends(caller_org)]
