"""The Anthropic adapter and the official SDK against the simulator on a loopback port.

Nothing of ours is patched: faults are injected through the simulator's ``/_simulator`` endpoints,
and time is taken out of the picture with ``processing_seconds=0``, ``[sim:slow]`` and ``finish``,
except where a timeout itself is under test.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import pytest
from anthropic.types import Message

from longops.domain.provider_status import ProviderPhase
from longops.domain.requests import BatchRequest, parse_requests
from longops.domain.results import ProviderResult
from longops.domain.statuses import ItemStatus
from longops.providers.anthropic import AnthropicProvider
from longops.providers.base import (
    ProviderBatchInfo,
    ProviderNotFound,
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
    Submission,
    no_staging,
)
from longops.providers.simulator import SimConfig, SimulatorState, error_roll, run_in_thread, start_embedded
from longops.providers.simulator.state import parse_create_body


def params(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sim",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def batch_requests(**texts: str) -> list[BatchRequest]:
    raw = [{"custom_id": custom_id, "params": params(text)} for custom_id, text in texts.items()]
    return parse_requests(raw, openai_endpoint=None, max_requests=1000)


@pytest.fixture
async def sim() -> AsyncIterator[str]:
    async with start_embedded(processing_seconds=0.0) as url:
        yield url


@pytest.fixture
async def control(sim: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{sim}/_simulator") as client:
        yield client


@pytest.fixture
async def provider(sim: str) -> AsyncIterator[AnthropicProvider]:
    adapter = AnthropicProvider(api_key="test-key", base_url=sim, timeout=5.0, name="simulator")
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def sdk(sim: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(api_key="test-key", base_url=sim, max_retries=0)
    yield client
    await client.close()


async def submit(provider: AnthropicProvider, requests: list[BatchRequest]) -> ProviderBatchInfo:
    submission = Submission(reference="pb_test", endpoint="/v1/messages", request_count=len(requests))
    return await provider.create(submission, requests, no_staging)


async def collect(provider: AnthropicProvider, batch_id: str) -> dict[str, ProviderResult]:
    info = await provider.retrieve(batch_id)
    return {result.custom_id: result async for result in provider.results(info)}


async def post(control: httpx.AsyncClient, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await control.post(path, json=body or {})
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


# --- the adapter ----------------------------------------------------------------------------------------


async def test_adapter_round_trip(provider: AnthropicProvider) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    created = await submit(provider, batch_requests(a="hello", b="héllo wörld"))
    assert created.provider_batch_id.startswith("msgbatch_")
    assert (created.processing_status, created.phase, created.request_count) == (
        "in_progress",
        ProviderPhase.RUNNING,
        2,
    )
    assert created.created_at >= before

    ended = await provider.retrieve(created.provider_batch_id)
    assert (ended.processing_status, ended.phase, ended.request_count) == ("ended", ProviderPhase.ENDED, 2)

    results = await collect(provider, created.provider_batch_id)
    assert {r.status for r in results.values()} == {ItemStatus.SUCCEEDED}
    assert all(r.error is None and r.response_json is not None for r in results.values())
    message = Message.model_validate_json(results["b"].response_json or "")
    assert message.content[0].type == "text" and message.content[0].text == "héllo wörld"
    assert message.model == "claude-sim" and message.usage.output_tokens > 0

    recent = await provider.list_recent(before)
    assert [info.provider_batch_id for info in recent] == [created.provider_batch_id]
    assert await provider.list_recent(datetime.now(UTC) + timedelta(minutes=1)) == []


async def test_list_recent_pages_newest_first_and_stops_at_the_window(
    provider: AnthropicProvider, control: httpx.AsyncClient
) -> None:
    first = await submit(provider, batch_requests(a="1"))
    cutoff = datetime.now(UTC)
    later = [await submit(provider, batch_requests(a=str(i))) for i in range(3)]
    window = [info.provider_batch_id for info in await provider.list_recent(first.created_at)]
    assert window == [info.provider_batch_id for info in reversed([first, *later])]
    after_cutoff = [info.provider_batch_id for info in await provider.list_recent(cutoff)]
    assert after_cutoff == [info.provider_batch_id for info in reversed(later)]


async def test_cancel_keeps_finished_results_and_cancels_the_rest(
    provider: AnthropicProvider, control: httpx.AsyncClient
) -> None:
    await post(control, "/config", {"cancel_seconds": 3600})
    batch = await submit(provider, batch_requests(a="done early", b="[sim:slow] hold on", c="done too"))
    batch_id = batch.provider_batch_id
    assert (await provider.retrieve(batch_id)).processing_status == "in_progress"  # held by the slow item

    cancelling = await provider.cancel(batch_id)
    assert (cancelling.processing_status, cancelling.phase) == ("canceling", ProviderPhase.RUNNING)
    assert (await provider.retrieve(batch_id)).processing_status == "canceling"
    with pytest.raises(ProviderOutcomeUnknown):
        await collect(provider, batch_id)  # no results before the batch has ended

    await post(control, f"/batches/{batch_id}/finish")  # the cancellation completes now
    ended = await provider.retrieve(batch_id)
    assert (ended.processing_status, ended.phase) == ("ended", ProviderPhase.ENDED)
    results = await collect(provider, batch_id)
    assert {cid: r.status for cid, r in results.items()} == {
        "a": ItemStatus.SUCCEEDED,
        "b": ItemStatus.CANCELLED,
        "c": ItemStatus.SUCCEEDED,
    }
    assert results["b"].error is not None and results["b"].error["type"] == "cancelled"
    assert results["b"].response_json is None

    with pytest.raises(ProviderRejected) as rejected:
        await provider.cancel(batch_id)
    assert rejected.value.status_code == 400 and "ended" in rejected.value.message


async def test_markers_and_invalid_params_shape_item_outcomes(provider: AnthropicProvider) -> None:
    requests = batch_requests(
        ok="fine",
        overloaded="please [sim:error]",
        chosen="[sim:error=invalid_request_error]",
        gone="[sim:expire]",
    )
    requests.append(BatchRequest("no_model", json.dumps({"max_tokens": 5, "messages": []})))
    batch = await submit(provider, requests)
    results = await collect(provider, batch.provider_batch_id)
    outcomes = {cid: (r.status, r.error["type"] if r.error else None) for cid, r in results.items()}
    assert outcomes == {
        "ok": (ItemStatus.SUCCEEDED, None),
        "overloaded": (ItemStatus.ERRORED, "overloaded_error"),
        "chosen": (ItemStatus.ERRORED, "invalid_request_error"),
        "gone": (ItemStatus.EXPIRED, "expired"),
        "no_model": (ItemStatus.ERRORED, "invalid_request_error"),
    }
    assert results["no_model"].error == {"type": "invalid_request_error", "message": "model: Field required"}


async def test_error_rate_is_deterministic_per_custom_id(
    provider: AnthropicProvider, control: httpx.AsyncClient
) -> None:
    await post(control, "/config", {"error_rate": 0.5})
    texts = {f"item-{i}": f"text {i}" for i in range(40)}
    expected = {cid for cid in texts if error_roll(cid) < 0.5}
    assert 0 < len(expected) < len(texts)
    for _ in range(2):
        batch = await submit(provider, batch_requests(**texts))
        results = await collect(provider, batch.provider_batch_id)
        assert {cid for cid, r in results.items() if r.status is ItemStatus.ERRORED} == expected
        assert all(
            r.error == {"type": "overloaded_error", "message": "Overloaded"}
            for cid, r in results.items()
            if cid in expected
        )


async def test_retrieve_errors_are_retryable_and_unknown_ids_not_found(
    provider: AnthropicProvider, control: httpx.AsyncClient
) -> None:
    batch = await submit(provider, batch_requests(a="x"))
    await post(control, "/faults", {"retrieve_errors": [500, 529]})
    with pytest.raises(ProviderOutcomeUnknown) as server_error:
        await provider.retrieve(batch.provider_batch_id)
    assert (server_error.value.status_code, server_error.value.error_type) == (500, "api_error")
    with pytest.raises(ProviderUnavailable) as overloaded:
        await provider.retrieve(batch.provider_batch_id)
    assert overloaded.value.error_type == "overloaded_error"
    assert (await provider.retrieve(batch.provider_batch_id)).phase is ProviderPhase.ENDED  # faults used up

    with pytest.raises(ProviderNotFound) as missing:
        await provider.retrieve("msgbatch_unknown")
    assert missing.value.error_type == "not_found_error"


async def test_results_error_answers_and_retrieve_timeouts_are_classified(
    sim: str, provider: AnthropicProvider, control: httpx.AsyncClient
) -> None:
    """retrieve and results go over their own HTTP client: its failures read as the SDK's do."""
    batch = await submit(provider, batch_requests(a="x"))
    await post(control, "/faults", {"results_errors": [500, 529]})
    with pytest.raises(ProviderOutcomeUnknown) as server_error:
        await collect(provider, batch.provider_batch_id)
    assert (server_error.value.status_code, server_error.value.error_type) == (500, "api_error")
    with pytest.raises(ProviderUnavailable) as overloaded:
        await collect(provider, batch.provider_batch_id)
    assert overloaded.value.error_type == "overloaded_error" and overloaded.value.message

    impatient = AnthropicProvider(api_key="test-key", base_url=sim, timeout=0.3)
    try:
        await post(control, "/faults", {"retrieve_delay_seconds": 5})
        with pytest.raises(ProviderOutcomeUnknown) as timed_out:
            await impatient.retrieve(batch.provider_batch_id)
        assert timed_out.value.error_type == "timeout_error"
    finally:
        await impatient.aclose()
    assert set(await collect(provider, batch.provider_batch_id)) == {"a"}  # faults used up


async def test_create_errors_are_classified_by_what_they_prove(
    provider: AnthropicProvider, control: httpx.AsyncClient
) -> None:
    await post(control, "/faults", {"create_errors": [529, 429, 500]})
    with pytest.raises(ProviderUnavailable) as overloaded:
        await submit(provider, batch_requests(a="x"))
    assert (overloaded.value.status_code, overloaded.value.error_type) == (529, "overloaded_error")
    with pytest.raises(ProviderUnavailable) as rate_limited:
        await submit(provider, batch_requests(a="x"))
    assert rate_limited.value.error_type == "rate_limit_error"
    with pytest.raises(ProviderOutcomeUnknown):
        await submit(provider, batch_requests(a="x"))

    duplicate = [BatchRequest("same", json.dumps(params("x"))), BatchRequest("same", json.dumps(params("y")))]
    with pytest.raises(ProviderRejected) as rejected:
        await submit(provider, duplicate)
    assert type(rejected.value) is ProviderRejected
    assert rejected.value.status_code == 400 and rejected.value.error_type == "invalid_request_error"
    assert "Duplicate custom_id 'same'" in rejected.value.message

    stats = (await control.get("/stats")).json()
    assert stats["calls"]["create"] == 4 and stats["batches"] == 0  # none of them created anything


async def test_create_5xx_after_the_fact_is_unknown_and_found_by_list(
    provider: AnthropicProvider, control: httpx.AsyncClient
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    await post(control, "/faults", {"create_applied_errors": [502]})
    with pytest.raises(ProviderOutcomeUnknown):
        await submit(provider, batch_requests(a="x", b="y"))
    [found] = await provider.list_recent(since)
    assert found.request_count == 2


async def test_create_timeout_after_sending_is_unknown(sim: str, control: httpx.AsyncClient) -> None:
    impatient = AnthropicProvider(api_key="test-key", base_url=sim, timeout=0.3)
    try:
        await post(control, "/faults", {"create_delay_seconds": 5})
        with pytest.raises(ProviderOutcomeUnknown) as timed_out:
            await submit(impatient, batch_requests(a="x"))
        assert timed_out.value.error_type == "timeout_error"
        assert (
            len(await impatient.list_recent(datetime.now(UTC) - timedelta(minutes=1))) == 1
        )  # it was created
    finally:
        await impatient.aclose()


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    nobody = AnthropicProvider(api_key="test-key", base_url=f"http://127.0.0.1:{port}", timeout=2.0)
    try:
        with pytest.raises(ProviderUnavailable) as refused:
            await submit(nobody, batch_requests(a="x"))
        assert refused.value.error_type == "connection_error"
        with pytest.raises(ProviderUnavailable) as refused:  # retrieve has its own HTTP client
            await nobody.retrieve("msgbatch_any")
        assert refused.value.error_type == "connection_error"
    finally:
        await nobody.aclose()


async def test_results_stream_cut_raises_instead_of_ending_short(
    provider: AnthropicProvider, sdk: anthropic.AsyncAnthropic, control: httpx.AsyncClient
) -> None:
    batch = await submit(provider, batch_requests(a="1", b="2", c="3"))
    await post(control, "/faults", {"results_cut_after_lines": 1, "results_cut_count": 2})

    received: list[str] = []
    with pytest.raises(ProviderOutcomeUnknown):
        async for result in provider.results(batch):
            received.append(result.custom_id)
    assert received in ([], ["a"])

    with pytest.raises((httpx2.HTTPError, anthropic.APIError)):  # the SDK leaves transport errors unwrapped
        async for _ in await sdk.messages.batches.results(batch.provider_batch_id):
            pass

    assert set(await collect(provider, batch.provider_batch_id)) == {"a", "b", "c"}  # faults used up


# --- the raw SDK ----------------------------------------------------------------------------------------


async def test_official_sdk_round_trip(sdk: anthropic.AsyncAnthropic) -> None:
    ids = []
    for i in range(3):
        batch = await sdk.messages.batches.create(
            requests=[{"custom_id": f"r{i}", "params": params(f"say {i}", system="be brief")}]  # type: ignore[typeddict-item]
        )
        assert batch.type == "message_batch" and batch.processing_status == "in_progress"
        assert batch.request_counts.processing == 1 and batch.results_url is None
        ids.append(batch.id)

    page = await sdk.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[:0:-1] and page.has_more and page.last_id == ids[1]
    assert [b.id async for b in sdk.messages.batches.list(limit=2)] == ids[::-1]  # auto-paging
    newer = await sdk.messages.batches.list(before_id=ids[0], limit=1)
    assert [b.id for b in newer.data] == [ids[1]]

    ended = await sdk.messages.batches.retrieve(ids[0])
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.request_counts.succeeded == 1 and ended.results_url is not None
    [line] = [line async for line in await sdk.messages.batches.results(ids[0])]
    assert line.custom_id == "r0" and line.result.type == "succeeded"
    message = line.result.message
    assert message.content[0].type == "text" and message.content[0].text == "say 0"
    assert message.stop_reason == "end_turn" and message.usage.input_tokens == 4  # "be brief" + "say 0"


async def test_simulator_rejects_bad_input_like_the_real_api(
    sdk: anthropic.AsyncAnthropic, control: httpx.AsyncClient
) -> None:
    bad_bodies: list[list[Any]] = [
        [],
        [{"custom_id": "has space", "params": params("x")}],
        [{"custom_id": "a"}],
        [{"custom_id": "a", "params": params("x")}, {"custom_id": "a", "params": params("y")}],
    ]
    for requests in bad_bodies:
        with pytest.raises(anthropic.BadRequestError) as error:
            await sdk.messages.batches.create(requests=requests)
        assert error.value.type == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError):
        await sdk.messages.batches.list(limit=1001)
    with pytest.raises(anthropic.NotFoundError):
        await sdk.messages.batches.cancel("msgbatch_nope")
    unknown = await control.get("/nothing-here")
    assert unknown.status_code == 404 and unknown.json()["type"] == "error"
    assert (await control.post("/faults", json={"bogus": 1})).status_code == 400
    assert (await control.get("/stats")).json()["calls"]["create"] == 4


async def test_stats_count_creates_and_retrieves_per_batch(
    provider: AnthropicProvider, control: httpx.AsyncClient
) -> None:
    first = await submit(provider, batch_requests(a="x"))
    second = await submit(provider, batch_requests(a="y"))
    for _ in range(3):
        await provider.retrieve(first.provider_batch_id)
    await provider.retrieve(second.provider_batch_id)
    stats = (await control.get("/stats")).json()
    assert stats["calls"]["create"] == 2 and stats["batches"] == 2
    assert stats["by_batch"][first.provider_batch_id]["retrieve"] == 3
    assert stats["by_batch"][second.provider_batch_id]["retrieve"] == 1


# --- persistence, embedding, the processing model -------------------------------------------------------


async def test_batches_and_results_survive_a_restart(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "sim")
    async with start_embedded(state_dir=state_dir) as url:
        adapter = AnthropicProvider(api_key="k", base_url=url)
        done = await submit(adapter, batch_requests(a="kept", b="[sim:error]"))
        held = await submit(adapter, batch_requests(a="[sim:slow]"))
        before = await collect(adapter, done.provider_batch_id)
        await adapter.aclose()

    async with start_embedded(state_dir=state_dir) as url:
        adapter = AnthropicProvider(api_key="k", base_url=url)
        assert (await adapter.retrieve(done.provider_batch_id)).phase is ProviderPhase.ENDED
        assert await collect(adapter, done.provider_batch_id) == before
        assert (await adapter.retrieve(held.provider_batch_id)).processing_status == "in_progress"
        await adapter.cancel(held.provider_batch_id)  # cancel_seconds=0: ends at once
        [cancelled] = (await collect(adapter, held.provider_batch_id)).values()
        assert cancelled.status is ItemStatus.CANCELLED
        listed = await adapter.list_recent(datetime.now(UTC) - timedelta(hours=1))
        assert [i.provider_batch_id for i in listed] == [held.provider_batch_id, done.provider_batch_id]
        await adapter.aclose()


def test_threaded_simulator_serves_synchronous_clients() -> None:
    with run_in_thread() as url:
        client = anthropic.Anthropic(api_key="k", base_url=url, max_retries=0)
        batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": params("hi")}])  # type: ignore[typeddict-item]
        assert client.messages.batches.retrieve(batch.id).processing_status == "ended"
        client.close()


def test_processing_model_follows_the_clock() -> None:
    """Item i of n finishes at created_at + processing_seconds * (i + 1) / n; a cancel at t ends the
    batch cancel_seconds later, keeping what finished by then."""
    now = [1000.0]
    state = SimulatorState(SimConfig(processing_seconds=10.0, cancel_seconds=2.0), clock=lambda: now[0])
    body = json.dumps({"requests": [{"custom_id": f"i{k}", "params": params(str(k))} for k in range(5)]})
    batch = state.create(parse_create_body(body.encode(), error_rate=0))
    now[0] = 1005.0  # items 0 and 1 finished at 1002 and 1004
    state.cancel(batch.id)
    assert batch.processing_status(now[0]) == "canceling"
    assert batch.request_counts(now[0])["processing"] == 5  # nothing is counted before the end
    now[0] = 1006.5  # item 2 finished at 1006, before the cancellation completed at 1007
    assert batch.processing_status(now[0]) == "canceling"
    now[0] = 1007.0
    assert batch.processing_status(now[0]) == "ended"
    assert batch.request_counts(now[0]) == {
        "processing": 0,
        "succeeded": 3,
        "errored": 0,
        "canceled": 2,
        "expired": 0,
    }
    kinds = [json.loads(line)["result"]["type"] for line in state.results(batch.id)]
    assert kinds == ["succeeded", "succeeded", "succeeded", "canceled", "canceled"]


def test_finish_and_expiry_end_batches_held_by_slow_items() -> None:
    """``finish`` lets every non-slow item finish and expires the slow ones; so does the expiry."""
    now = [0.0]
    state = SimulatorState(SimConfig(processing_seconds=100.0, expiry_seconds=60.0), clock=lambda: now[0])
    body = {
        "requests": [
            {"custom_id": cid, "params": params(text)} for cid, text in [("a", "x"), ("b", "[sim:slow]")]
        ]
    }
    finished = state.create(parse_create_body(json.dumps(body).encode(), error_rate=0))
    expiring = state.create(parse_create_body(json.dumps(body).encode(), error_rate=0))
    now[0] = 10.0
    state.finish(finished.id)
    assert finished.processing_status(now[0]) == "ended"
    assert expiring.processing_status(now[0]) == "in_progress"
    now[0] = 60.0  # the expiry: item "a" finished at 50 (100 * 1 / 2), the slow one never did
    assert expiring.processing_status(now[0]) == "ended"
    for batch in (finished, expiring):
        kinds = [json.loads(line)["result"]["type"] for line in state.results(batch.id)]
        assert kinds == ["succeeded", "expired"]
        assert batch.request_counts(now[0])["expired"] == 1
