"""Request-scoped dependencies: the database, the caller's organization, the engine handle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from longops.engine.engine import Engine
from longops.engine.metrics import Metrics
from longops.providers.registry import ProviderSpec
from longops.settings import Settings
from longops.store.db import Database

DEFAULT_ORG = "default"


@dataclass
class AppState:
    settings: Settings
    db: Database
    metrics: Metrics
    providers: dict[str, ProviderSpec]
    engine: Engine | None = None


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.longops
    return state


async def caller_org(request: Request) -> str:
    """The organization every query of this request is scoped to."""
    return DEFAULT_ORG


State = Annotated[AppState, Depends(app_state)]
Org = Annotated[str, Depends(caller_org)]
