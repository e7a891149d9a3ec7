"""Provider conformance: the same tests, parametrized over every batch adapter, against the simulator.

Each adapter is reached through its official SDK on the bundled simulator's wire for its protocol
(Anthropic Message Batches for ``simulator``, OpenAI Files + Batches for ``simulator_openai``). A
new adapter (Gemini, Bedrock) joins by adding an :class:`Adapter` here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from longops.domain.provider_status import ProviderPhase
from longops.domain.requests import BatchRequest
from longops.domain.results import ProviderResult
from longops.domain.statuses import ItemStatus
from longops.providers.anthropic import AnthropicProvider
from longops.providers.base import (
    Provider,
    ProviderBatchInfo,
    ProviderNotFound,
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
    Submission,
)
from longops.providers.openai import OpenAIProvider
from longops.providers.simulator import start_embedded
from tests.support.processes import wait_for_async


@dataclass(frozen=True)
class Adapter:
    name: str
    endpoint: str
    make: Callable[[str], Provider]  # from the simulator's base URL
    params: Callable[[str], dict[str, Any]]  # a request body carrying this text
    text_of: Callable[[dict[str, Any]], str]  # the answer's text


def _anthropic_text(response: dict[str, Any]) -> str:
    return str(response["content"][0]["text"])


def _chat_text(response: dict[str, Any]) -> str:
    return str(response["choices"][0]["message"]["content"])


ADAPTERS = [
    Adapter(
        "simulator",
        "/v1/messages",
        lambda url: AnthropicProvider(api_key="k", base_url=url, timeout=5.0, name="simulator"),
        lambda text: {
            "model": "claude-sim",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": text}],
        },
        _anthropic_text,
    ),
    Adapter(
        "simulator_openai",
        "/v1/chat/completions",
        lambda url: OpenAIProvider(api_key="k", base_url=f"{url}/v1", timeout=5.0, name="simulator_openai"),
        lambda text: {"model": "gpt-sim", "messages": [{"role": "user", "content": text}]},
        _chat_text,
    ),
]


@pytest.fixture
async def sim() -> AsyncIterator[str]:
    async with start_embedded(processing_seconds=0.0, cancel_seconds=0.0) as url:
        yield url


@pytest.fixture(params=ADAPTERS, ids=[a.name for a in ADAPTERS])
def adapter(request: pytest.FixtureRequest) -> Adapter:
    chosen: Adapter = request.param
    return chosen


@pytest.fixture
async def provider(adapter: Adapter, sim: str) -> AsyncIterator[Provider]:
    made = adapter.make(sim)
    yield made
    await made.aclose()


@pytest.fixture
async def control(sim: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{sim}/_simulator") as client:
        yield client


class Staging:
    def __init__(self) -> None:
        self.staged: list[dict[str, str]] = []

    async def __call__(self, staged: Mapping[str, str]) -> None:
        self.staged.append(dict(staged))


def requests(adapter: Adapter, **texts: str) -> list[BatchRequest]:
    return [BatchRequest(cid, json.dumps(adapter.params(text))) for cid, text in texts.items()]


async def create(
    provider: Provider, adapter: Adapter, reference: str = "pb_conformance", **texts: str
) -> ProviderBatchInfo:
    batch = requests(adapter, **texts)
    return await provider.create(Submission(reference, adapter.endpoint, len(batch)), batch, Staging())


async def ended(provider: Provider, batch_id: str) -> ProviderBatchInfo:
    seen: list[ProviderBatchInfo] = []

    async def check() -> bool:
        seen.append(await provider.retrieve(batch_id))
        return seen[-1].phase != ProviderPhase.RUNNING

    await wait_for_async(check, 10, f"batch {batch_id} to end")
    return seen[-1]


async def results(provider: Provider, info: ProviderBatchInfo) -> dict[str, ProviderResult]:
    return {result.custom_id: result async for result in provider.results(info)}


async def test_create_then_retrieve(provider: Provider, adapter: Adapter) -> None:
    created = await create(provider, adapter, a="one", b="two")
    assert created.phase == ProviderPhase.RUNNING
    assert created.request_count == 2
    info = await ended(provider, created.provider_batch_id)
    assert info.phase == ProviderPhase.ENDED
    assert info.provider_batch_id == created.provider_batch_id
    assert info.request_count == 2
    assert abs(info.created_at - created.created_at) < timedelta(seconds=1)


async def test_results_shapes(provider: Provider, adapter: Adapter) -> None:
    created = await create(
        provider,
        adapter,
        ok="echo me",
        boom="[sim:error=invalid_request_error] no",
        busy="[sim:error] x",
        gone="[sim:lost]",
    )
    got = await results(provider, await ended(provider, created.provider_batch_id))
    assert set(got) == {"ok", "boom", "busy"}  # the lost one is in no result: the engine errors it
    assert got["ok"].status == ItemStatus.SUCCEEDED and got["ok"].error is None
    assert got["ok"].response_json is not None
    assert adapter.text_of(json.loads(got["ok"].response_json)) == "echo me"
    assert got["boom"].status == ItemStatus.ERRORED and got["boom"].response_json is None
    assert got["boom"].error == {
        "type": "invalid_request_error",
        "message": "Simulated invalid_request_error",
    }
    assert got["busy"].status == ItemStatus.ERRORED
    assert got["busy"].error is not None and got["busy"].error["type"] in ("overloaded_error", "server_error")


async def test_list_recent_finds_what_was_created(provider: Provider, adapter: Adapter) -> None:
    first = await create(provider, adapter, reference="pb_first", a="1")
    second = await create(provider, adapter, reference="pb_second", a="2")
    found = await provider.list_recent(first.created_at - timedelta(seconds=1))
    ids = [info.provider_batch_id for info in found]
    assert ids.index(second.provider_batch_id) < ids.index(first.provider_batch_id)  # newest first
    references = {info.provider_batch_id: info.reference for info in found}
    if provider.tags_batches:
        assert references[first.provider_batch_id] == "pb_first"
        assert references[second.provider_batch_id] == "pb_second"
    else:
        assert set(references.values()) == {None}
    assert await provider.list_recent(second.created_at + timedelta(days=1)) == []


async def test_cancel_ends_unfinished_items_cancelled(provider: Provider, adapter: Adapter) -> None:
    created = await create(provider, adapter, slow="[sim:slow] wait")
    cancelling = await provider.cancel(created.provider_batch_id)
    assert cancelling.phase == ProviderPhase.RUNNING  # cancelling is never final
    got = await results(provider, await ended(provider, created.provider_batch_id))
    assert got["slow"].status == ItemStatus.CANCELLED
    assert got["slow"].error is not None and got["slow"].error["type"] == "cancelled"


async def test_unknown_batch_is_not_found(provider: Provider) -> None:
    with pytest.raises(ProviderNotFound):
        await provider.retrieve("batch_does_not_exist")


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, ProviderUnavailable), (400, ProviderRejected), (500, ProviderOutcomeUnknown)],
)
async def test_create_errors_are_classified(
    provider: Provider, adapter: Adapter, control: httpx.AsyncClient, status: int, kind: type[Exception]
) -> None:
    (await control.post("/faults", json={"create_errors": [status]})).raise_for_status()
    with pytest.raises(kind):
        await create(provider, adapter, a="x")
    stats = (await control.get("/stats")).json()
    assert stats["calls"]["create"] == 1 and stats["batches"] == 0  # nothing was created either way


async def test_a_cut_results_stream_raises_instead_of_ending_short(
    provider: Provider, adapter: Adapter, control: httpx.AsyncClient
) -> None:
    info = await ended(provider, (await create(provider, adapter, a="1", b="2", c="3")).provider_batch_id)
    (await control.post("/faults", json={"results_cut_after_lines": 1})).raise_for_status()
    received: list[str] = []
    with pytest.raises(ProviderOutcomeUnknown):
        async for result in provider.results(info):
            received.append(result.custom_id)
    assert received in ([], ["a"])
    assert set(await results(provider, info)) == {"a", "b", "c"}  # the fault is used up


async def test_batches_and_results_survive_a_simulator_restart(adapter: Adapter, tmp_path: Path) -> None:
    state_dir = str(tmp_path / "sim")
    async with start_embedded(state_dir=state_dir) as url:
        provider = adapter.make(url)
        try:
            created = await create(provider, adapter, kept="kept", busy="[sim:error] x")
            before = await results(provider, await ended(provider, created.provider_batch_id))
        finally:
            await provider.aclose()
    async with start_embedded(state_dir=state_dir) as url:
        provider = adapter.make(url)
        try:
            info = await ended(provider, created.provider_batch_id)
            assert await results(provider, info) == before
            recent = await provider.list_recent(created.created_at - timedelta(seconds=1))
            assert [b.provider_batch_id for b in recent] == [created.provider_batch_id]
        finally:
            await provider.aclose()
