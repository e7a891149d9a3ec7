"""What a provider says, however late, odd or hostile, never strands a batch (issue 19, classes 1, 5
and 8; issue 12, item 7), on both backends, through the API, the engine's components and a
simulator (behind a hostile proxy where the simulator would be too polite)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from longops.engine.submitter import PLAN_PER_CYCLE, Submitter
from longops.providers.anthropic import AnthropicProvider
from longops.providers.registry import ANTHROPIC, SIMULATOR, ProviderRegistry
from tests.support.harness import Harness, harness, requests_for
from tests.support.hostile import Hostility, hostile_provider


def _strict(line: str) -> dict[str, Any]:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON: {line!r}")

    parsed: dict[str, Any] = json.loads(line, parse_constant=refuse)
    return parsed


async def _results(h: Harness, batch_id: str) -> dict[str, dict[str, Any]]:
    return {line["custom_id"]: line for line in map(_strict, await h.results(batch_id))}


def _front(hostility: Hostility) -> Callable[[str], AbstractAsyncContextManager[str]]:
    return lambda upstream: hostile_provider(upstream, hostility)


async def test_a_cancel_that_arrives_after_the_provider_ended_ingests_the_results(make_settings: Any) -> None:
    async with harness(make_settings(), processing_seconds=3600) as h:
        batch = await h.create_batch(requests_for("a", "b", "c"))
        await h.submitter.run_once()
        pb = (await h.batch(batch["id"]))["provider_batches"][0]
        finished = await h.simulator.post(f"/_simulator/batches/{pb['provider_batch_id']}/finish")
        assert finished.status_code == 200
        cancelled = await h.api.post(f"/v1/batches/{batch['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["cancel_requested_at"] is not None

        await h.poll()

        batch = await h.batch(batch["id"])
        assert batch["status"] == "cancelled", batch  # ended, as a batch whose cancel was asked for
        assert batch["provider_batches"][0]["status"] == "completed"
        assert {line["status"] for line in (await _results(h, batch["id"])).values()} == {"succeeded"}
        calls = (await h.sim_stats())["by_batch"][pb["provider_batch_id"]]
        assert calls["cancel"] == 1  # refused with 400 ("has ended"), then a retrieve, then the results
        assert calls["results"] == 1


def _corrupt(lines: list[bytes]) -> list[bytes]:
    """r1: NaN in its message; r2: cut midway; r3: invalid UTF-8; r4: an escaped NUL (valid); plus
    a line of garbage that names no item and the other lines as the simulator wrote them."""
    by_id = {json.loads(line)["custom_id"]: line for line in lines}
    return [
        by_id["r0"],
        b'{"custom_id":"r1","result":{"type":"succeeded","message":{"content":NaN}}}\n',
        by_id["r2"][:30] + b"\n",
        b'{"custom_id":"r3","result":{"type":"succeeded","message":{"text":"\xff\xfe"}}}\n',
        b"\x00\x00 garbage \xc3\x28\n",
        b'{"custom_id": "r4", "result": {"type": "succeeded", '
        b'"message": {"text": "a\\u0000b", "n": 1e400}}}\n',
        by_id["r5"],
    ]


async def test_bad_results_lines_error_their_own_items_and_the_rest_is_ingested(
    make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hostility = Hostility(rewrite_results=_corrupt)
    async with harness(make_settings(), front=_front(hostility)) as h:
        batch = await h.create_batch(requests_for(*(f"q{i}" for i in range(7))))
        await h.submitter.run_once()
        await h.poll()

        batch = await h.batch(batch["id"])
        assert batch["status"] == "completed", batch
        results = await _results(h, batch["id"])
        assert {cid: line["status"] for cid, line in results.items()} == {
            "r0": "succeeded",
            "r1": "errored",
            "r2": "errored",
            "r3": "errored",
            "r4": "errored",
            "r5": "succeeded",
            "r6": "errored",
        }
        for cid in ("r1", "r2", "r3"):
            assert results[cid]["error"]["type"] == "invalid_results_line", results[cid]
        assert results["r4"]["error"]["type"] == "invalid_results_line"  # 1e400 is no finite number
        assert results["r6"]["error"]["type"] == "missing_result"  # its line was the garbage one
        assert any("unreadable results line" in r.getMessage() for r in caplog.records)
        items = await h.api.get(f"/v1/batches/{batch['id']}/items", params={"limit": 100})
        assert items.status_code == 200 and len(items.json()["data"]) == 7
        assert h.poller._metrics.unreadable_result_lines._value.get() == 1  # type: ignore[attr-defined]


async def test_results_that_cannot_be_had_end_the_batch_after_bounded_attempts(make_settings: Any) -> None:
    hostility = Hostility(results_status=404)
    async with harness(make_settings(results_max_attempts=3), front=_front(hostility)) as h:
        batch = await h.create_batch(requests_for("a", "b"))
        await h.submitter.run_once()
        for _ in range(2):
            await h.poll()
            assert (await h.batch(batch["id"]))["status"] == "running"
        await h.poll()

        batch = await h.batch(batch["id"])
        assert batch["status"] in ("completed", "failed"), batch
        pb = batch["provider_batches"][0]
        assert pb["status"] == "failed"
        assert pb["error"]["type"] == "results_unavailable"
        assert "after 3 attempts" in pb["error"]["message"]
        assert len(hostility.results_hosts) == 3
        lines = await _results(h, batch["id"])
        assert {line["error"]["type"] for line in lines.values()} == {"results_unavailable"}
        await h.poll(2)  # ended: never asked again
        assert len(hostility.results_hosts) == 3


async def test_the_provider_key_goes_only_to_the_providers_own_origin(make_settings: Any) -> None:
    hostility = Hostility()

    @asynccontextmanager
    async def front(upstream: str) -> AsyncIterator[str]:
        async with hostile_provider(upstream, hostility) as foreign:
            hostility.results_origin = foreign  # another port: another origin
            async with hostile_provider(upstream, hostility) as own:
                yield own

    async with harness(make_settings(), front=front) as h:
        batch = await h.create_batch(requests_for("a", "b"))
        await h.submitter.run_once()
        await h.poll()

        assert (await h.batch(batch["id"]))["status"] == "completed"
        assert hostility.results_hosts == [hostility.results_origin.removeprefix("http://")]  # type: ignore[union-attr]
        (headers,) = hostility.results_headers
        assert "x-api-key" not in headers and "authorization" not in headers
        assert {line["status"] for line in (await _results(h, batch["id"])).values()} == {"succeeded"}


async def test_batches_of_a_provider_not_configured_on_the_leader_do_not_starve_the_others(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The API knows "anthropic"; the leader under test does not (configurations that differ).
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-used")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    async with harness(make_settings(submit_interval_seconds=0.01)) as h:
        metrics = h.poller._metrics
        # A former leader knew "anthropic" (here: the simulator under that name) and planned 20
        # such batches, whose creates were refused for now (429); 2 more were never planned.
        former = ProviderRegistry(
            {
                ANTHROPIC: AnthropicProvider(
                    name=ANTHROPIC, api_key="sk-sim", base_url=str(h.simulator.base_url)
                )
            }
        )
        stranded = []
        for _ in range(PLAN_PER_CYCLE):
            stranded.append(
                await h.api.post("/v1/batches", json={"provider": ANTHROPIC, "requests": requests_for("x")})
            )
        await h.faults(create_errors=[429] * PLAN_PER_CYCLE)
        await Submitter(h.db, former, h.settings, metrics).run_once()
        await former.aclose()
        assert (await h.sim_stats())["calls"]["create"] == PLAN_PER_CYCLE
        unplanned = []
        for _ in range(2):
            unplanned.append(
                await h.api.post("/v1/batches", json={"provider": ANTHROPIC, "requests": requests_for("x")})
            )
        assert all(r.status_code == 201 for r in stranded + unplanned)
        ours = await h.create_batch(requests_for("y"))

        simulator = h.registry.get(SIMULATOR)
        assert simulator is not None
        leader = Submitter(h.db, ProviderRegistry({SIMULATOR: simulator}), h.settings, metrics)
        for _ in range(2):  # the first cycle may still find the stranded rows due before ours
            await leader.run_once()

        assert (await h.batch(ours["id"]))["status"] == "running"
        for response in stranded:
            (pb,) = (await h.batch(response.json()["id"]))["provider_batches"]
            assert pb["status"] == "created"
            assert pb["error"]["type"] == "provider_not_configured", pb
            assert "ANTHROPIC_API_KEY" in pb["error"]["message"]
        for response in unplanned:
            assert (await h.batch(response.json()["id"]))["status"] == "created"
