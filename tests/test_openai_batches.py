"""OpenAI-protocol batches through the HTTP API, cycle by cycle, against the simulator's OpenAI wire
(both backends): results from the output and error files, expiry, cancel, failure, splitting,
reconciliation by metadata, file deletion, the providers file, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import longops
from longops.cli import app as cli_app
from longops.providers.simulator import start_embedded
from tests.support.harness import Harness, harness
from tests.support.processes import wait_for_async
from tests.support.servers import app_in_thread


def chat(text: str) -> dict[str, Any]:
    return {"model": "gpt-sim", "messages": [{"role": "user", "content": text}]}


def lines_for(*texts: str) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": chat(text)}
        for i, text in enumerate(texts)
    ]


async def create(
    h: Harness, requests: list[dict[str, Any]], provider: str = "simulator_openai", **extra: Any
) -> dict[str, Any]:
    response = await h.api.post("/v1/batches", json={"provider": provider, "requests": requests, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def run_to_end(h: Harness, batch_id: str, cycles: int = 20) -> dict[str, Any]:
    for _ in range(cycles):
        await h.submitter.run_once()
        await h.poll()
        batch = await h.batch(batch_id)
        if batch["status"] not in ("created", "pending", "running"):
            return batch
    raise AssertionError(f"batch {batch_id} did not end: {batch}")


async def wait_for_deletes(h: Harness, count: int) -> None:
    async def deleted() -> bool:
        return bool((await h.sim_stats())["calls"]["delete"] >= count)

    await wait_for_async(deleted, 10, f"{count} file deletions")
    assert (await h.sim_stats())["calls"]["delete"] == count


def by_id(lines: list[str]) -> dict[str, dict[str, Any]]:
    return {line["custom_id"]: line for line in map(json.loads, lines)}


async def test_output_and_error_files_become_exact_items_and_files_are_deleted(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        batch = await create(
            h,
            lines_for(
                "hello", "[sim:error=invalid_request_error] bad", "[sim:error] busy", "[sim:lost] gone"
            ),
        )
        assert batch["endpoint"] == "/v1/chat/completions"
        batch = await run_to_end(h, batch["id"])
        assert batch["status"] == "completed"
        counts = batch["request_counts"]
        assert counts == {
            "total": 4,
            "processing": 0,
            "succeeded": 1,
            "errored": 3,
            "cancelled": 0,
            "expired": 0,
        }
        (pb,) = batch["provider_batches"]
        assert (pb["status"], pb["processing_status"]) == ("completed", "completed")
        results = by_id(await h.results(batch["id"]))
        assert results["r0"]["status"] == "succeeded"
        assert results["r0"]["response"]["object"] == "chat.completion"
        assert results["r0"]["response"]["choices"][0]["message"]["content"] == "hello"
        usage = results["r0"]["response"]["usage"]
        assert usage["prompt_tokens_details"]["cached_tokens"] == 0
        assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
        assert results["r1"]["error"] == {
            "type": "invalid_request_error",
            "message": "Simulated invalid_request_error",
        }
        assert results["r2"]["error"] == {"type": "server_error", "message": "Overloaded"}
        assert results["r3"]["error"]["type"] == "missing_result"
        await wait_for_deletes(h, 3)  # input, output and error file, released in the background
        listing = (await h.simulator.get(f"/v1/batches/{pb['provider_batch_id']}")).json()
        for key in ("input_file_id", "output_file_id", "error_file_id"):
            assert (await h.simulator.get(f"/v1/files/{listing[key]}")).status_code == 404


async def test_files_are_kept_when_deletion_is_off(make_settings: Any) -> None:
    async with harness(make_settings(openai_delete_files=False)) as h:
        batch = await run_to_end(h, (await create(h, lines_for("keep")))["id"])
        assert batch["status"] == "completed"
        assert (await h.sim_stats())["calls"]["delete"] == 0


async def test_expired_batch_expires_its_unfinished_items(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        (await h.simulator.post("/_simulator/config", json={"expiry_seconds": 0})).raise_for_status()
        batch = await run_to_end(h, (await create(h, lines_for("[sim:slow] a", "[sim:slow] b")))["id"])
        assert batch["status"] == "expired"
        assert batch["request_counts"]["expired"] == 2
        assert batch["provider_batches"][0]["processing_status"] == "expired"
        results = by_id(await h.results(batch["id"]))
        assert {line["status"] for line in results.values()} == {"expired"}
        assert results["r1"]["error"]["type"] == "expired"


async def test_cancelled_batch_cancels_its_unfinished_items(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        batch = await create(h, lines_for("[sim:slow] a", "[sim:slow] b"))
        await h.submitter.run_once()
        assert (await h.batch(batch["id"]))["status"] == "running"
        assert (await h.api.post(f"/v1/batches/{batch['id']}/cancel")).status_code == 200
        batch = await run_to_end(h, batch["id"])
        assert batch["status"] == "cancelled"
        assert batch["request_counts"]["cancelled"] == 2
        assert {line["error"]["type"] for line in by_id(await h.results(batch["id"])).values()} == {
            "cancelled"
        }


async def test_failed_batch_errors_its_items_with_the_providers_message(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        batch = await run_to_end(h, (await create(h, lines_for("fine", "[sim:fail] broken")))["id"])
        assert batch["status"] == "failed"
        (pb,) = batch["provider_batches"]
        assert (pb["status"], pb["processing_status"]) == ("failed", "failed")
        results = by_id(await h.results(batch["id"]))
        assert {line["status"] for line in results.values()} == {"errored"}
        assert "Simulated validation failure (r1)" in results["r0"]["error"]["message"]


async def test_split_above_max_requests(make_settings: Any) -> None:
    async with harness(make_settings(openai_max_requests=2)) as h:
        batch = await run_to_end(h, (await create(h, lines_for("a", "b", "c", "d", "e")))["id"])
        assert batch["status"] == "completed"
        assert [pb["request_count"] for pb in batch["provider_batches"]] == [2, 2, 1]
        assert batch["request_counts"]["succeeded"] == 5


async def test_unknown_create_outcome_is_reconciled_by_metadata_never_twice(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        await h.faults(create_applied_errors=[500])
        batch = await create(h, lines_for("a", "b"))
        await h.submitter.run_once()  # created at the provider, answered 500: unknown
        pending = await h.batch(batch["id"])
        assert pending["provider_batches"][0]["provider_batch_id"] is None
        batch = await run_to_end(h, batch["id"])
        assert batch["status"] == "completed"
        stats = await h.sim_stats()
        assert stats["calls"]["create"] == 1 and stats["batches"] == 1 and stats["calls"]["list"] >= 1


async def test_a_failed_upload_leaves_no_batch_and_is_retried(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        await h.faults(upload_errors=[500])
        batch = await create(h, lines_for("a"))
        await h.submitter.run_once()
        stats = await h.sim_stats()
        assert (stats["calls"]["upload"], stats["calls"]["create"], stats["batches"]) == (1, 0, 0)
        batch = await run_to_end(h, batch["id"])
        assert batch["status"] == "completed"
        stats = await h.sim_stats()
        assert (stats["calls"]["upload"], stats["calls"]["create"], stats["batches"]) == (2, 1, 1)


async def test_a_refused_create_deletes_its_uploaded_file(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        await h.faults(create_errors=[429])
        batch = await run_to_end(h, (await create(h, lines_for("a")))["id"])
        assert batch["status"] == "completed"
        # the first upload deleted when its create was refused; the batch's input and output files
        # after ingestion (no error file: nothing errored)
        await wait_for_deletes(h, 3)
        stats = await h.sim_stats()
        assert (stats["calls"]["upload"], stats["calls"]["delete"], stats["batches"]) == (2, 3, 1)


@pytest.mark.parametrize("endpoint", ["/v1/embeddings", "/v1/responses", "/v1/completions"])
async def test_each_endpoint_answers_in_its_shape(make_settings: Any, endpoint: str) -> None:
    body = {
        "/v1/embeddings": {"model": "emb-sim", "input": "vector me"},
        "/v1/responses": {"model": "gpt-sim", "input": "respond"},
        "/v1/completions": {"model": "gpt-sim", "prompt": "complete", "max_tokens": 16},
    }[endpoint]
    async with harness(make_settings()) as h:
        batch = await create(h, [{"custom_id": "a", "params": body}], endpoint=endpoint)
        assert batch["endpoint"] == endpoint
        batch = await run_to_end(h, batch["id"])
        response = by_id(await h.results(batch["id"]))["a"]["response"]
        expected = {
            "/v1/embeddings": "list",
            "/v1/responses": "response",
            "/v1/completions": "text_completion",
        }
        assert response["object"] == expected[endpoint]


async def test_providers_lists_protocols_and_endpoints(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        data = {p["name"]: p for p in (await h.api.get("/v1/providers")).json()["data"]}
        assert data["simulator"] == {
            "name": "simulator",
            "protocol": "anthropic",
            "batch": "native",
            "endpoints": ["/v1/messages"],
        }
        assert data["simulator_openai"]["protocol"] == "openai"
        assert data["simulator_openai"]["endpoints"][0] == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"provider": "simulator_openai", "endpoint": "/v1/embeddings", "requests": lines_for("a", "b")},
            "requests[0] (custom_id 'r0').url",
        ),
        ({"provider": "simulator_openai", "endpoint": "/v1/images", "requests": lines_for("a")}, "endpoint"),
        (
            {
                "provider": "simulator",
                "endpoint": "/v1/chat/completions",
                "requests": [{"custom_id": "a", "params": {}}],
            },
            "endpoint",
        ),
    ],
)
async def test_bad_endpoint_input_is_422_naming_the_field_and_stores_nothing(
    make_settings: Any, body: dict[str, Any], field: str
) -> None:
    async with harness(make_settings()) as h:
        response = await h.api.post("/v1/batches", json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["type"] == "validation_error"
        assert error["message"].startswith(field)
        assert (await h.api.get("/v1/batches")).json()["data"] == []


async def test_a_providers_file_provider_works_under_its_own_name(
    make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINE_API_KEY", "sk-mine")
    path = tmp_path / "providers.toml"
    async with start_embedded() as own:
        path.write_text(
            f'[providers.mine]\nprotocol = "openai"\nbase_url = "{own}/v1"\napi_key_env = "MINE_API_KEY"\n'
            "max_requests = 1\n"
        )
        async with harness(make_settings(providers_file=str(path))) as h:
            names = {p["name"]: p for p in (await h.api.get("/v1/providers")).json()["data"]}
            assert names["mine"] == {
                "name": "mine",
                "protocol": "openai",
                "batch": "native",
                "endpoints": ["/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions"],
            }
            batch = await create(h, lines_for("a", "b"), provider="mine")
            batch = await run_to_end(h, batch["id"])
            assert (batch["provider"], batch["status"]) == ("mine", "completed")
            assert [pb["request_count"] for pb in batch["provider_batches"]] == [1, 1]  # its own limit
            assert (await h.sim_stats())["batches"] == 0  # not the harness's simulator
        async with httpx.AsyncClient(base_url=own) as client:
            assert (await client.get("/_simulator/stats")).json()["batches"] == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '[providers.groq]\nprotocol = "grpc"\napi_key_env = "GROQ_API_KEY"\n',
            "provider 'groq': protocol 'grpc'",
        ),
        (
            '[providers.groq]\nprotocol = "openai"\napi_key_env = "LONGOPS_TEST_UNSET_KEY"\n',
            "provider 'groq': api_key_env names LONGOPS_TEST_UNSET_KEY, which is not set",
        ),
        (
            '[providers.groq]\nprotocol = "openai"\nbase_uri = "x"\n',
            "provider 'groq': unknown field(s) base_uri",
        ),
        ('[providers.vllm]\nprotocol = "openai_compatible"\n', "provider 'vllm': base_url is required"),
        ("[providers.groq\nprotocol = 1\n", "is not valid TOML"),
    ],
)
def test_a_bad_providers_file_stops_serve_with_one_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(content)
    env = {
        "PATH": "/usr/bin:/bin",
        "LONGOPS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "LONGOPS_PROVIDERS_FILE": str(path),
        "LONGOPS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "longops", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert lines[0].startswith(f"error: LONGOPS_PROVIDERS_FILE {path}")
    assert "Traceback" not in done.stderr


def test_simulator_openai_works_with_no_configuration_through_sdk_and_cli(
    make_settings: Any, tmp_path: Path
) -> None:
    """The engine's own embedded simulator serves the OpenAI path: SDK create with an endpoint, and
    ``longops submit --provider simulator_openai`` of the example file."""
    with (
        app_in_thread(make_settings(simulator_processing_seconds=0.2)) as app,
        longops.Client(base_url=app.url) as client,
    ):
        batch = client.batches.create(
            provider="simulator_openai",
            endpoint="/v1/embeddings",
            requests=[{"custom_id": "e1", "params": {"model": "emb-sim", "input": "hello"}}],
        )
        assert batch.endpoint == "/v1/embeddings"
        done = client.batches.wait(batch.id, timeout=60)
        assert done.status == "completed"
        (line,) = list(client.batches.results(batch.id))
        assert line.response["object"] == "list" and len(line.response["data"][0]["embedding"]) == 8

        example = Path(__file__).parent.parent / "examples" / "hello_openai.jsonl"
        runner = CliRunner()
        env = {"LONGOPS_SERVER_URL": app.url}
        out = tmp_path / "results.jsonl"
        result = runner.invoke(
            cli_app,
            ["submit", str(example), "--provider", "simulator_openai", "--wait", "--output", str(out)],
            env=env,
        )
        assert result.exit_code == 0, result.output
        lines = by_id(out.read_text().splitlines())
        assert [lines[f"q{i}"]["status"] for i in range(1, 5)] == ["succeeded"] * 3 + ["errored"]
        assert lines["q4"]["error"]["type"] == "invalid_request_error"
