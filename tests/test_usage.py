"""Usage and cost end to end, through HTTP, on both backends (issue 15).

The Anthropic shape runs through the bundled simulator, which reports cache writes and reads for
prompts marked ``cache_control`` (the first request with a prefix writes it, later ones read it).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from longops.cli import app as cli_app
from longops.settings import Settings
from tests.support.harness import Harness, harness
from tests.support.keys import bearer, create_key_now
from tests.support.processes import wait_for_async
from tests.support.servers import app_in_loop, app_in_thread

MakeSettings = Callable[..., Settings]
SONNET = {
    "input": Decimal(3),
    "output": Decimal(15),
    "cache_read": Decimal("0.30"),
    "cache_write": Decimal("3.75"),
}
SYSTEM = [{"type": "text", "text": "s" * 800, "cache_control": {"type": "ephemeral"}}]


def cached_request(i: int, text: str, model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    return {
        "custom_id": f"r{i}",
        "params": {
            "model": model,
            "max_tokens": 64,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": text}],
        },
    }


def batch_cost(usage: dict[str, int], prices: dict[str, Decimal] = SONNET) -> Decimal:
    live = (
        usage["input_tokens"] * prices["input"]
        + usage["output_tokens"] * prices["output"]
        + usage["cache_read_input_tokens"] * prices["cache_read"]
        + usage["cache_creation_input_tokens"] * prices["cache_write"]
    ) / 10**6
    return live * Decimal("0.5")


async def run_to_end(h: Harness, batch_id: str, polls: int = 20) -> dict[str, Any]:
    await h.submitter.run_once()
    for _ in range(polls):
        await h.poll()
        batch = await h.batch(batch_id)
        if batch["status"] in ("completed", "failed", "cancelled", "expired"):
            return batch
    raise AssertionError(f"batch {batch_id} did not end after {polls} polls")


async def items_of(h: Harness, batch_id: str) -> list[dict[str, Any]]:
    body = (await h.api.get(f"/v1/batches/{batch_id}/items", params={"limit": 1000})).json()
    data: list[dict[str, Any]] = body["data"]
    return data


def total(rows: list[dict[str, Any]], name: str) -> int:
    return sum(row["usage"][name] for row in rows)


async def test_anthropic_usage_with_cache_tokens_is_counted_per_item_summed_per_batch_and_priced_exactly(
    make_settings: MakeSettings,
) -> None:
    async with harness(make_settings()) as h:
        created = await h.create_batch([cached_request(i, f"question {i} " * (i + 1)) for i in range(4)])
        assert created["usage"] == dict.fromkeys(created["usage"], 0)
        assert created["cost"] == {"amount": "0", "currency": "USD", "basis": "batch", "unpriced_models": []}
        before = await items_of(h, created["id"])
        assert {item["usage"] for item in before} == {None}  # null before any result
        batch = await run_to_end(h, created["id"])
        items = await items_of(h, created["id"])
        for item in items:
            assert item["usage"] == {
                "input_tokens": item["response"]["usage"]["input_tokens"],
                "output_tokens": item["response"]["usage"]["output_tokens"],
                "cache_read_input_tokens": item["response"]["usage"]["cache_read_input_tokens"],
                "cache_creation_input_tokens": item["response"]["usage"]["cache_creation_input_tokens"],
                "reasoning_tokens": 0,
            }
            assert Decimal(item["cost"]) == batch_cost(item["usage"])
        # the first request writes the 800-character prefix (200 tokens), the three others read it
        assert [i["usage"]["cache_creation_input_tokens"] for i in items] == [200, 0, 0, 0]
        assert [i["usage"]["cache_read_input_tokens"] for i in items] == [0, 200, 200, 200]
        assert batch["usage"] == {name: total(items, name) for name in batch["usage"]}
        assert batch["cost"]["basis"] == "batch" and batch["cost"]["unpriced_models"] == []
        assert Decimal(batch["cost"]["amount"]) == batch_cost(batch["usage"])


async def test_a_results_stream_cut_midway_and_read_again_is_counted_once(
    make_settings: MakeSettings,
) -> None:
    async with harness(make_settings(ingest_chunk_size=2)) as h:
        created = await h.create_batch([cached_request(i, f"q{i}") for i in range(7)])
        await h.submitter.run_once()
        await h.faults(results_cut_after_lines=5, results_cut_count=1)
        await h.poll()  # reads 5 lines: two chunks of 2 are written, then the stream breaks
        cut = await h.batch(created["id"])
        assert cut["status"] == "running" and cut["request_counts"]["succeeded"] == 4
        batch = await run_to_end(h, created["id"])  # the whole stream again
        assert (await h.sim_stats())["calls"]["results"] == 2
        items = await items_of(h, created["id"])
        assert batch["usage"] == {name: total(items, name) for name in batch["usage"]}
        for item in items:
            assert item["usage"]["input_tokens"] == item["response"]["usage"]["input_tokens"]
        report = (await h.api.get("/v1/usage")).json()["data"]
        assert report[0]["requests"] == 7
        assert report[0]["input_tokens"] == batch["usage"]["input_tokens"]


async def test_an_unpriced_model_is_listed_never_guessed(make_settings: MakeSettings) -> None:
    async with harness(make_settings()) as h:
        created = await h.create_batch(
            [cached_request(0, "a", "claude-sim"), cached_request(1, "b", "claude-sonnet-4-5")]
        )
        batch = await run_to_end(h, created["id"])
        items = {item["custom_id"]: item for item in await items_of(h, created["id"])}
        assert items["r0"]["cost"] is None and items["r0"]["usage"]["output_tokens"] > 0
        assert batch["cost"]["unpriced_models"] == ["claude-sim"]
        assert Decimal(batch["cost"]["amount"]) == Decimal(items["r1"]["cost"])


async def test_an_errored_item_has_zero_usage_and_costs_nothing(make_settings: MakeSettings) -> None:
    async with harness(make_settings()) as h:
        created = await h.create_batch([cached_request(0, "[sim:error] no")])
        batch = await run_to_end(h, created["id"])
        [item] = await items_of(h, created["id"])
        assert item["status"] == "errored"
        assert item["usage"] == dict.fromkeys(item["usage"], 0) and item["cost"] == "0"
        assert batch["cost"]["amount"] == "0"


async def test_a_prices_file_extends_and_overrides_the_bundled_table(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        """
[[prices]]
provider = "simulator"
model = "claude-sim"
input = 1.25
output = 2.5
cache_read = 0.125
cache_write = 1.5
batch_discount = 0.2

[[prices]]
provider = "anthropic"
model = "claude-sonnet-4-5"
input = 100
output = 100
"""
    )
    async with harness(make_settings(prices_file=str(prices))) as h:
        listed = (await h.api.get("/v1/prices")).json()["data"]
        sonnet = next(r for r in listed if r["provider"] == "anthropic" and r["model"] == "claude-sonnet-4-5")
        assert (sonnet["input"], sonnet["cache_read"], sonnet["batch_discount"]) == ("100", "100", "0")
        created = await h.create_batch([cached_request(0, "hello", "claude-sim-20260101")])
        batch = await run_to_end(h, created["id"])
        usage = batch["usage"]
        expected = (
            (
                usage["input_tokens"] * Decimal("1.25")
                + usage["output_tokens"] * Decimal("2.5")
                + usage["cache_creation_input_tokens"] * Decimal("1.5")
            )
            / 10**6
            * Decimal("0.8")
        )
        assert batch["cost"]["unpriced_models"] == []
        assert Decimal(batch["cost"]["amount"]) == expected


def test_a_malformed_prices_file_stops_serve_with_one_line_naming_the_row_and_field(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[prices]]\nprovider = "openai"\nmodel = "gpt-5"\ninput = 1\noutput = 2\n\n'
        '[[prices]]\nprovider = "openai"\nmodel = "o3"\ninput = "cheap"\noutput = 8\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "longops", "serve", "--port", "0"],
        env={
            "PATH": "/usr/bin:/bin",
            "LONGOPS_PRICES_FILE": str(prices),
            "LONGOPS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        },
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: LONGOPS_PRICES_FILE {prices}: prices[1].input: must be a number, got 'cheap'"]
    assert not (tmp_path / "db.sqlite").exists()  # stopped before touching the database


async def test_estimate_stores_nothing_and_low_is_at_most_high(make_settings: MakeSettings) -> None:
    async with harness(make_settings()) as h:
        body = {"provider": "simulator", "requests": [cached_request(i, "x" * 40) for i in range(3)]}
        answer = await h.api.post("/v1/batches/estimate", json=body)
        assert answer.status_code == 200, answer.text
        found = answer.json()
        assert found["requests"] == 3 and found["max_output_tokens"] == 3 * 64
        assert Decimal(found["cost"]["low"]) <= Decimal(found["cost"]["high"])
        assert found["cost"]["basis"] == "batch" and found["unpriced_models"] == []
        assert (await h.api.get("/v1/batches")).json()["data"] == []
        assert (await h.api.get("/v1/jobs")).json()["data"] == []
        bad = await h.api.post(
            "/v1/batches/estimate", json={"provider": "simulator", "requests": [{"custom_id": "a"}]}
        )
        assert bad.status_code == 422 and "requests[0]" in bad.json()["error"]["message"]


def test_the_estimate_of_10000_requests_is_the_same_through_the_api_and_the_cli(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    models = ("claude-sonnet-4-5", "claude-haiku-4-5-20251001", "claude-sim")
    requests = [cached_request(i, f"request {i} " * (i % 13 + 1), models[i % 3]) for i in range(10_000)]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    with app_in_thread(make_settings(), run_engine=False) as server:
        through_api = httpx.post(
            f"{server.url}/v1/batches/estimate",
            json={"provider": "simulator", "requests": requests},
            timeout=120,
        ).json()
        result = CliRunner().invoke(
            cli_app, ["--server-url", server.url, "estimate", str(path), "--provider", "simulator", "--json"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == through_api
        assert httpx.get(f"{server.url}/v1/batches", timeout=30).json()["data"] == []
    assert through_api["requests"] == 10_000
    assert through_api["unpriced_models"] == ["claude-sim"]
    assert Decimal(through_api["cost"]["low"]) < Decimal(through_api["cost"]["high"])


async def test_usage_groups_by_any_keys_and_shows_only_the_callers_organization(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings()
    async with harness(settings) as h:
        await h.api.get("/healthz")  # the app has migrated the database
        keys = {org: create_key_now_async(settings.database_url, org) for org in ("acme", "globex")}
        acme_key = await keys["acme"]
        acme, globex = bearer(acme_key), bearer(await keys["globex"])
        h.api.headers.update(acme)
        first = await h.create_batch(
            [cached_request(i, "a" * (i + 1), "claude-sonnet-4-5") for i in range(3)]
        )
        second = await h.create_batch([cached_request(i, "b", "claude-haiku-4-5") for i in range(2)])
        h.api.headers.update(globex)
        other = await h.create_batch([cached_request(0, "c", "claude-sonnet-4-5")])
        for batch in (first, second, other):
            await run_to_end_as(h, batch["id"], acme if batch is not other else globex)
        h.api.headers.update(acme)
        by_model = (await h.api.get("/v1/usage", params={"group_by": "model"})).json()["data"]
        assert [(r["model"], r["requests"], r["provider"], r["day"]) for r in by_model] == [
            ("claude-haiku-4-5", 2, None, None),
            ("claude-sonnet-4-5", 3, None, None),
        ]
        acme_batches = [await h.batch(first["id"]), await h.batch(second["id"])]
        [everything] = (await h.api.get("/v1/usage")).json()["data"]
        assert everything["requests"] == 5
        assert everything["input_tokens"] == sum(b["usage"]["input_tokens"] for b in acme_batches)
        assert Decimal(everything["cost"]["amount"]) == sum(
            Decimal(b["cost"]["amount"]) for b in acme_batches
        )
        by_all = (await h.api.get("/v1/usage", params={"group_by": "provider,model,day"})).json()["data"]
        assert {(r["provider"], r["model"]) for r in by_all} == {
            ("simulator", "claude-haiku-4-5"),
            ("simulator", "claude-sonnet-4-5"),
        }
        day = by_all[0]["day"]
        assert {r["day"] for r in by_all} == {day}
        assert (await h.api.get("/v1/usage", params={"end": "2000-01-01"})).json()["data"] == []
        assert (
            len(
                (await h.api.get("/v1/usage", params={"start": day, "end": day, "group_by": "day"})).json()[
                    "data"
                ]
            )
            == 1
        )
        bad = await h.api.get("/v1/usage", params={"group_by": "week"})
        assert bad.status_code == 422 and bad.json()["error"]["message"].startswith("group_by:")
        h.api.headers.update(globex)
        [theirs] = (await h.api.get("/v1/usage", params={"group_by": "model"})).json()["data"]
        assert (theirs["model"], theirs["requests"]) == ("claude-sonnet-4-5", 1)
        # the CLI shows the same report (run in a thread: the server runs on this loop)
        args = ["--server-url", str(h.api.base_url), "--api-key", acme_key, "usage", "--group-by", "model"]
        as_json = await asyncio.to_thread(CliRunner().invoke, cli_app, [*args, "--json"])
        assert as_json.exit_code == 0, as_json.output
        assert json.loads(as_json.output)["data"] == by_model
        table = await asyncio.to_thread(CliRunner().invoke, cli_app, args)
        assert table.exit_code == 0 and "claude-haiku-4-5" in table.output, table.output


async def create_key_now_async(database_url: str, org: str) -> str:
    return await asyncio.to_thread(create_key_now, database_url, org)


async def run_to_end_as(h: Harness, batch_id: str, headers: dict[str, str]) -> None:
    h.api.headers.update(headers)
    await run_to_end(h, batch_id)


async def test_the_metrics_count_tokens_and_cost_of_the_results_written(make_settings: MakeSettings) -> None:
    async with (
        app_in_loop(make_settings()) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as api,
    ):
        created = (
            await api.post(
                "/v1/batches",
                json={"provider": "simulator", "requests": [cached_request(i, "hi") for i in range(3)]},
            )
        ).json()

        async def ended() -> bool:
            return bool((await api.get(f"/v1/batches/{created['id']}")).json()["status"] == "completed")

        await wait_for_async(ended, 60, "the batch to complete")
        batch = (await api.get(f"/v1/batches/{created['id']}")).json()
        text = (await api.get("/metrics")).text
    labels = 'model="claude-sonnet-4-5",provider="simulator"'
    assert f'longops_tokens_total{{kind="input",{labels}}} {float(batch["usage"]["input_tokens"])}' in text
    assert f'longops_tokens_total{{kind="cache_read",{labels}}} 400.0' in text
    assert f'longops_tokens_total{{kind="cache_creation",{labels}}} 200.0' in text
    cost = next(line for line in text.splitlines() if line.startswith(f"longops_cost_usd_total{{{labels}}}"))
    assert abs(Decimal(cost.split()[-1]) - Decimal(batch["cost"]["amount"])) < Decimal("1e-12")
