"""Emulated batches (``openai_compatible``): longops sends each item itself, against the simulator's
live endpoints on loopback, through the HTTP API. Both backends.

What is counted is counted at the simulator: the calls per request (keyed by the item id longops
sends as ``X-Client-Request-Id``) and the peak of requests in flight.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from longops.providers.simulator.server import start_embedded
from tests.support.postgres import fresh_database
from tests.support.processes import cluster, wait_for, wait_for_async
from tests.support.servers import app_in_loop

EXAMPLE_PROVIDERS_FILE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "providers-local.toml"


def chat(text: str) -> dict[str, Any]:
    return {"model": "sim-chat", "messages": [{"role": "user", "content": text}]}


def chat_requests(*texts: str) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "params": chat(text)} for i, text in enumerate(texts)]


@dataclass
class Emulated:
    api: httpx.AsyncClient
    simulator: httpx.AsyncClient

    async def create(self, requests: list[dict[str, Any]], provider: str = "openai_compatible") -> str:
        response = await self.api.post("/v1/batches", json={"provider": provider, "requests": requests})
        assert response.status_code == 201, response.text
        batch_id: str = response.json()["id"]
        return batch_id

    async def batch(self, batch_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/v1/batches/{batch_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_ended(self, batch_id: str, timeout: float = 60) -> dict[str, Any]:
        async def ended() -> bool:
            return (await self.batch(batch_id))["completed_at"] is not None

        await wait_for_async(ended, timeout, f"batch {batch_id} to end")
        return await self.batch(batch_id)

    async def items(self, batch_id: str) -> dict[str, dict[str, Any]]:
        response = await self.api.get(f"/v1/batches/{batch_id}/items", params={"limit": 1000})
        assert response.status_code == 200, response.text
        return {item["custom_id"]: item for item in response.json()["data"]}

    async def live_stats(self) -> dict[str, Any]:
        live: dict[str, Any] = (await self.simulator.get("/_simulator/stats")).json()["live"]
        return live

    async def configure(self, **config: Any) -> None:
        response = await self.simulator.post("/_simulator/config", json=config)
        assert response.status_code == 200, response.text

    async def faults(self, **spec: Any) -> None:
        response = await self.simulator.post("/_simulator/faults", json=spec)
        assert response.status_code == 200, response.text


@asynccontextmanager
async def emulated(make_settings: Any, **settings: Any) -> AsyncIterator[Emulated]:
    async with start_embedded() as simulator_url:
        values = {
            "simulator_url": simulator_url,
            "openai_compatible_base_url": f"{simulator_url}/v1",
            "worker_poll_seconds": 0.2,
            "provider_timeout_seconds": 10.0,
            **settings,
        }
        async with (
            app_in_loop(make_settings(**values)) as app,
            httpx.AsyncClient(base_url=app.url, timeout=30) as api,
            httpx.AsyncClient(base_url=simulator_url, timeout=30) as simulator,
        ):
            yield Emulated(api, simulator)


async def test_batch_runs_within_concurrency_and_a_400_is_final(make_settings: Any) -> None:
    async with emulated(make_settings, openai_compatible_concurrency=3) as env:
        await env.configure(live_latency_seconds=0.02)
        texts = [f"question {i}" for i in range(30)] + ["bad [sim:error=invalid_request_error]"]
        batch_id = await env.create(chat_requests(*texts))
        batch = await env.wait_ended(batch_id)
        assert batch["status"] == "completed"
        assert batch["request_counts"] == {
            "total": 31,
            "processing": 0,
            "succeeded": 30,
            "errored": 1,
            "cancelled": 0,
            "expired": 0,
        }
        (pb,) = batch["provider_batches"]
        assert (pb["status"], pb["processing_status"], pb["request_count"]) == ("completed", "ended", 31)
        items = await env.items(batch_id)
        assert items["r0"]["response"]["choices"][0]["message"]["content"] == "question 0"
        assert items["r0"]["response"]["object"] == "chat.completion"
        bad = items["r30"]
        assert bad["status"] == "errored"
        assert bad["error"]["type"] == "invalid_request_error"
        live = await env.live_stats()
        assert 1 <= live["peak_in_flight"] <= 3
        assert {item["id"]: 1 for item in items.values()} == live["by_request"]  # the 400: once
        lines = (await env.api.get(f"/v1/batches/{batch_id}/results")).text.splitlines()
        assert sorted(json.loads(line)["custom_id"] for line in lines) == sorted(items)


async def test_429_with_retry_after_and_5xx_are_retried_up_to_max_attempts(make_settings: Any) -> None:
    async with emulated(make_settings, openai_compatible_max_attempts=3) as env:
        await env.faults(live_errors=[429], live_retry_after_seconds=1)
        first = await env.create(chat_requests("hello"))
        batch = await env.wait_ended(first)
        assert batch["status"] == "completed"
        item = (await env.items(first))["r0"]
        assert (item["status"], item["attempts"]) == ("succeeded", 2)
        live = await env.live_stats()
        assert live["by_request"][item["id"]] == 2
        (gap,) = live["gaps"][item["id"]]
        assert gap >= 1.0, "sent again before its Retry-After"  # a lower bound: any machine waits longer

        await env.faults(live_errors=[500], live_retry_after_seconds=0)
        await env.faults(live_errors=[502])  # no Retry-After: the engine's own backoff
        second = await env.create(chat_requests("always overloaded [sim:error]"))  # a 503 every time
        batch = await env.wait_ended(second)
        assert batch["status"] == "failed"
        item = (await env.items(second))["r0"]
        assert (item["status"], item["attempts"]) == ("errored", 3)
        assert item["error"]["type"] == "overloaded_error"
        assert (await env.live_stats())["by_request"][item["id"]] == 3


async def test_cancel_mid_run_stops_sending(make_settings: Any) -> None:
    async with emulated(make_settings, openai_compatible_concurrency=2) as env:
        await env.configure(live_latency_seconds=0.3)
        batch_id = await env.create(chat_requests(*(f"q{i}" for i in range(20))))

        async def sending() -> bool:
            return bool((await env.live_stats())["calls"] >= 2)

        await wait_for_async(sending, 30, "the first requests to be sent")
        response = await env.api.post(f"/v1/batches/{batch_id}/cancel")
        assert response.status_code == 200, response.text
        batch = await env.wait_ended(batch_id)
        assert batch["status"] == "cancelled"
        items = await env.items(batch_id)
        cancelled = [i for i in items.values() if i["status"] == "cancelled"]
        sent = [i for i in items.values() if i["status"] == "succeeded"]
        assert len(cancelled) + len(sent) == 20
        assert cancelled, "unsent items end cancelled"
        assert batch["request_counts"]["cancelled"] == len(cancelled)
        by_request = (await env.live_stats())["by_request"]
        assert not any(item["id"] in by_request for item in cancelled), "a cancelled item was sent"
        assert all(by_request[item["id"]] == 1 for item in sent)
        (pb,) = batch["provider_batches"]
        assert pb["processing_status"] == "ended"


async def test_providers_file_provider_under_its_own_name(make_settings: Any, tmp_path: Path) -> None:
    async with start_embedded() as simulator_url:
        path = tmp_path / "providers.toml"
        path.write_text(
            f'[providers.local-vllm]\nprotocol = "openai_compatible"\nbase_url = "{simulator_url}/v1"\n'
            "concurrency = 2\nmax_attempts = 2\n"
        )
        settings = make_settings(
            simulator_url=simulator_url, providers_file=str(path), worker_poll_seconds=0.2
        )
        async with (
            app_in_loop(settings) as app,
            httpx.AsyncClient(base_url=app.url, timeout=30) as api,
            httpx.AsyncClient(base_url=simulator_url, timeout=30) as simulator,
        ):
            env = Emulated(api, simulator)
            providers = {p["name"]: p for p in (await api.get("/v1/providers")).json()["data"]}
            assert providers["local-vllm"]["protocol"] == "openai_compatible"
            assert providers["local-vllm"]["batch"] == "emulated"
            assert "openai_compatible" not in providers  # LONGOPS_OPENAI_COMPATIBLE_BASE_URL unset
            await env.configure(live_latency_seconds=0.02)
            embed = {"model": "sim-embed", "input": "text"}
            requests = [{"custom_id": f"e{i}", "params": embed} for i in range(8)]
            response = await api.post(
                "/v1/batches",
                json={"provider": "local-vllm", "endpoint": "/v1/embeddings", "requests": requests},
            )
            assert response.status_code == 201, response.text
            batch = await env.wait_ended(response.json()["id"])
            assert batch["status"] == "completed"
            assert batch["provider"] == "local-vllm"
            assert batch["request_counts"]["succeeded"] == 8
            items = await env.items(batch["id"])
            assert items["e0"]["response"]["object"] == "list"
            assert 1 <= (await env.live_stats())["peak_in_flight"] <= 2


def test_sigkill_mid_run_then_restart_sends_no_final_item_again(tmp_path: Path, database_url: str) -> None:
    """A real ``longops serve`` is SIGKILLed while it sends; a restarted one finishes every item
    exactly once, and no item that was final before the kill is sent again."""
    env = {
        "LONGOPS_DATABASE_URL": database_url,
        "LONGOPS_PROVIDER_TIMEOUT_SECONDS": "2",
        "LONGOPS_OPENAI_COMPATIBLE_CONCURRENCY": "4",
        "LONGOPS_WORKER_POLL_SECONDS": "0.2",
        "LONGOPS_LOG_LEVEL": "INFO",
    }
    with cluster(tmp_path, **env) as group:
        simulator = group.start_simulator()
        group.env["LONGOPS_OPENAI_COMPATIBLE_BASE_URL"] = f"{simulator}/v1"
        httpx.post(f"{simulator}/_simulator/config", json={"live_latency_seconds": 0.05}).raise_for_status()
        api = group.start_server("first")
        requests = chat_requests(*(f"question {i}" for i in range(120)))
        body = {"provider": "openai_compatible", "requests": requests}
        created = httpx.post(f"{api}/v1/batches", json=body)
        assert created.status_code == 201, created.text
        batch_id = created.json()["id"]

        def items(url: str) -> list[dict[str, Any]]:
            page = httpx.get(f"{url}/v1/batches/{batch_id}/items", params={"limit": 1000}, timeout=10)
            data: list[dict[str, Any]] = page.json()["data"]
            return data

        def some_final() -> list[dict[str, Any]] | None:
            final = [i for i in items(api) if i["status"] == "succeeded"]
            return final if len(final) >= 10 else None

        final_before = wait_for(some_final, 60, "ten items to be final")
        group.processes[-1].kill()
        assert len(final_before) < 120, "the batch ended before the kill"

        api = group.start_server("second")

        def ended() -> bool:
            return bool(httpx.get(f"{api}/v1/batches/{batch_id}").json()["status"] == "completed")

        wait_for(ended, 90, "the batch to complete after the restart")
        after = items(api)
        assert [i["status"] for i in after] == ["succeeded"] * 120
        by_request = httpx.get(f"{simulator}/_simulator/stats").json()["live"]["by_request"]
        assert set(by_request) == {i["id"] for i in after}
        assert all(by_request[i["id"]] == 1 for i in final_before), "a final item was sent again"
        lines = httpx.get(f"{api}/v1/batches/{batch_id}/results").text.splitlines()
        custom_ids = sorted(json.loads(line)["custom_id"] for line in lines)
        assert custom_ids == sorted(r["custom_id"] for r in requests)
        batch = httpx.get(f"{api}/v1/batches/{batch_id}").json()
        assert batch["request_counts"]["succeeded"] == 120


async def test_documented_providers_file_is_served(make_settings: Any) -> None:
    """docs/examples/providers-local.toml (the vLLM and Ollama example of docs/providers.md) loads."""
    async with (
        app_in_loop(make_settings(providers_file=str(EXAMPLE_PROVIDERS_FILE))) as app,
        httpx.AsyncClient(base_url=app.url, timeout=30) as api,
    ):
        providers = {p["name"]: p for p in (await api.get("/v1/providers")).json()["data"]}
    for name in ("vllm", "ollama"):
        assert (providers[name]["protocol"], providers[name]["batch"]) == ("openai_compatible", "emulated")
        assert "/v1/chat/completions" in providers[name]["endpoints"]


async def test_bad_simulator_controls_name_the_field_and_queue_nothing() -> None:
    async with start_embedded() as simulator_url, httpx.AsyncClient(base_url=simulator_url) as simulator:
        response = await simulator.post(
            "/_simulator/faults", json={"live_errors": [429], "live_retry_after_seconds": -1}
        )
        assert response.status_code == 400
        assert "live_retry_after_seconds" in response.json()["error"]["message"]
        assert (await simulator.get("/_simulator/faults")).json()["errors"] == {}
        response = await simulator.post("/_simulator/config", json={"live_latency_seconds": "slow"})
        assert response.status_code == 400
        assert "live_latency_seconds" in response.json()["error"]["message"]
        response = await simulator.post("/v1/chat/completions", content=b"{not json")
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
        response = await simulator.post("/v1/chat/completions", json={"messages": []})
        assert response.status_code == 400
        assert "model" in response.json()["error"]["message"]


def test_two_instances_share_a_batch_and_send_each_item_once(
    tmp_path: Path, postgres_server_url: str
) -> None:
    """Two ``longops serve`` processes on one PostgreSQL both claim from the same emulated batch
    (SKIP LOCKED): every item is final once and was sent once."""
    with fresh_database(postgres_server_url) as database_url:
        env = {
            "LONGOPS_DATABASE_URL": database_url,
            "LONGOPS_OPENAI_COMPATIBLE_CONCURRENCY": "3",
            "LONGOPS_WORKER_POLL_SECONDS": "0.2",
        }
        with cluster(tmp_path, **env) as group:
            simulator = group.start_simulator()
            group.env["LONGOPS_OPENAI_COMPATIBLE_BASE_URL"] = f"{simulator}/v1"
            config = {"live_latency_seconds": 0.05}
            httpx.post(f"{simulator}/_simulator/config", json=config).raise_for_status()
            first = group.start_server("first")
            group.start_server("second")
            body = {"provider": "openai_compatible", "requests": chat_requests(*(f"q{i}" for i in range(90)))}
            created = httpx.post(f"{first}/v1/batches", json=body)
            assert created.status_code == 201, created.text
            batch_id = created.json()["id"]

            def ended() -> bool:
                return bool(httpx.get(f"{first}/v1/batches/{batch_id}").json()["completed_at"])

            wait_for(ended, 90, "the batch to end")
            page = httpx.get(f"{first}/v1/batches/{batch_id}/items", params={"limit": 1000}).json()["data"]
            assert [i["status"] for i in page] == ["succeeded"] * 90
            assert [i["attempts"] for i in page] == [1] * 90
            live = httpx.get(f"{simulator}/_simulator/stats").json()["live"]
            assert live["by_request"] == {i["id"]: 1 for i in page}
            assert live["peak_in_flight"] <= 6  # 3 per instance
