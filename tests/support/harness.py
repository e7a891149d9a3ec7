"""Drive the real engine components cycle by cycle against the real API and a simulator.

Tests that must count polls run the app without its engine and call the submitter's and the
poller's public ``run_once`` themselves, so "after two polls" means exactly two cycles.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from longops.engine.metrics import Metrics
from longops.engine.poller import Poller
from longops.engine.submitter import Submitter
from longops.providers.registry import ProviderRegistry, registry_for
from longops.providers.simulator.server import start_embedded
from longops.settings import Settings
from longops.store.db import Database, open_database
from tests.support.servers import app_in_loop


def message(text: str) -> dict[str, Any]:
    return {"model": "claude-sim", "max_tokens": 32, "messages": [{"role": "user", "content": text}]}


def requests_for(*texts: str) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "params": message(text)} for i, text in enumerate(texts)]


@dataclass
class Harness:
    api: httpx.AsyncClient
    simulator: httpx.AsyncClient
    submitter: Submitter
    poller: Poller
    db: Database  # the engine components' database (unfenced), e.g. to count its statements
    registry: ProviderRegistry
    settings: Settings

    async def create_batch(self, requests: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        response = await self.api.post(
            "/v1/batches", json={"provider": "simulator", "requests": requests, **extra}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def batch(self, batch_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/v1/batches/{batch_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def results(self, batch_id: str) -> list[str]:
        response = await self.api.get(f"/v1/batches/{batch_id}/results")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return response.text.splitlines()

    async def poll(self, times: int = 1) -> None:
        """Run ``times`` poll cycles, each after the previous one's batches have become due again."""
        for _ in range(times):
            await asyncio.sleep(self.poller_interval)
            await self.poller.run_once()

    @property
    def poller_interval(self) -> float:
        return 0.02

    async def faults(self, **spec: Any) -> None:
        response = await self.simulator.post("/_simulator/faults", json=spec)
        assert response.status_code == 200, response.text

    async def sim_stats(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.simulator.get("/_simulator/stats")).json()
        return body


@asynccontextmanager
async def harness(
    settings: Settings,
    *,
    front: Callable[[str], AbstractAsyncContextManager[str]] | None = None,
    **simulator_options: Any,
) -> AsyncIterator[Harness]:
    """The API without its engine, a simulator, and a submitter and poller the test drives.
    ``front`` puts a server in front of the simulator (given its URL; yields the URL the engine
    uses as the provider, e.g. ``tests.support.hostile``)."""
    settings = settings.model_copy(
        update={"poll_interval_seconds": 0.01, "poll_jitter_seconds": 0.0, "provider_timeout_seconds": 2.0}
    )
    async with AsyncExitStack() as stack:
        simulator_url = await stack.enter_async_context(start_embedded(**simulator_options))
        provider_url = simulator_url
        if front is not None:
            provider_url = await stack.enter_async_context(front(simulator_url))
        settings = settings.model_copy(update={"simulator_url": provider_url})
        async with app_in_loop(settings, run_engine=False) as app:
            db = open_database(settings.database_url)
            registry = registry_for(settings.provider_options(), provider_url)
            metrics = Metrics()
            try:
                async with (
                    httpx.AsyncClient(base_url=app.url, timeout=30) as api,
                    httpx.AsyncClient(base_url=simulator_url, timeout=30) as simulator,
                ):
                    yield Harness(
                        api=api,
                        simulator=simulator,
                        submitter=Submitter(db, registry, settings, metrics),
                        poller=Poller(db, registry, settings, metrics),
                        db=db,
                        registry=registry,
                        settings=settings,
                    )
            finally:
                await registry.aclose()
                await db.dispose()
