"""The CLI against a real ``longops serve`` process, on both backends: generic jobs, results export,
deliveries, global options on either side of the command, and a batch whose submission keeps failing
showing why in ``status``, in ``wait`` and in the SDK's ``on_progress``."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from longops import Client, WaitTimeout
from longops.domain.schemas import Batch
from tests.support.cli import run_cli
from tests.support.processes import Cluster, cluster, free_port, wait_for

EXAMPLES = Path(__file__).parent.parent / "examples"
FAST = {
    "LONGOPS_POLL_INTERVAL_SECONDS": "0.2",
    "LONGOPS_POLL_JITTER_SECONDS": "0.05",
    "LONGOPS_SUBMIT_INTERVAL_SECONDS": "0.1",
    "LONGOPS_SIMULATOR_POLL_INTERVAL_SECONDS": "0.2",
    "LONGOPS_SIMULATOR_PROCESSING_SECONDS": "0",
    "LONGOPS_LEADER_RETRY_SECONDS": "0.5",
    "LONGOPS_HANDLERS": "first_hour_handlers",
}
HANDLERS = """
from longops import handler


@handler("echo", max_attempts=1)
async def echo(ctx, input):
    return {"echo": input}


@handler("refuse", max_attempts=1)
async def refuse(ctx, input):
    raise ValueError("no thanks")
"""


@pytest.fixture
def running(tmp_path: Path, database_url: str) -> Iterator[Cluster]:
    (tmp_path / "first_hour_handlers.py").write_text(HANDLERS)
    shutil.copy(EXAMPLES / "hello.jsonl", tmp_path / "hello.jsonl")
    with cluster(tmp_path, LONGOPS_DATABASE_URL=database_url, **FAST) as group:
        yield group


def cli(group: Cluster, *args: str) -> tuple[int, str, str]:
    result = run_cli(list(args), group.workdir)
    return result.returncode, result.stdout, result.stderr


def test_jobs_commands_and_results_of_a_job(running: Cluster) -> None:
    url = running.start_server("api")
    code, out, err = cli(
        running, "jobs", "create", "echo", "--input", '{"n": 1}', "--wait", "--server-url", url
    )
    assert code == 0, err
    job_id = out.strip()
    assert job_id.startswith("job_")

    code, out, _ = cli(running, "--server-url", url, "results", job_id)  # global option before
    assert code == 0 and json.loads(out) == {"echo": {"n": 1}}
    code, out, _ = cli(running, "jobs", "status", job_id, "--json", "--server-url", url)
    assert code == 0 and json.loads(out)["status"] == "completed"
    code, out, _ = cli(running, "jobs", "list", "--type", "echo", "--server-url", url)
    assert code == 0 and job_id in out

    code, out, err = cli(running, "jobs", "create", "refuse", "--wait", "--server-url", url)
    assert code == 1
    failed_id = out.strip()
    assert err.splitlines()[-1] == f"error: job {failed_id} ended failed"
    assert "ValueError: no thanks" in err
    code, _, err = cli(running, "results", failed_id, "--server-url", url)
    assert code == 1
    assert err == f"error: job {failed_id} ended failed: ValueError: no thanks; it has no result\n"

    code, _, err = cli(running, "jobs", "create", "echo", "--input", "{nope", "--server-url", url)
    assert code == 1 and err.startswith("error: --input is not valid JSON: ") and "(column 2)" in err
    code, _, err = cli(running, "jobs", "create", "no_such_type", "--server-url", url)
    assert code == 1 and err.count("\n") == 1 and "no_such_type" in err


def test_results_export_jsonl_csv_and_by_status(running: Cluster) -> None:
    url = running.start_server("api")
    code, out, err = cli(
        running, "submit", "hello.jsonl", "--provider", "simulator", "--wait", "--server-url", url
    )
    assert code == 0, err
    batch_id = out.strip()
    requests = [json.loads(line) for line in (running.workdir / "hello.jsonl").read_text().splitlines()]

    code, out, _ = cli(running, "results", batch_id, "--server-url", url)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [line["custom_id"] for line in lines] == [r["custom_id"] for r in requests]

    code, out, _ = cli(running, "results", batch_id, "--format", "csv", "--server-url", url)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["custom_id"] for row in rows] == [line["custom_id"] for line in lines]
    for row, line in zip(rows, lines, strict=True):
        assert row["status"] == line["status"]
        if line["status"] == "succeeded":
            assert row["text"] == "".join(block["text"] for block in line["response"]["content"])
            assert int(row["input_tokens"]) == line["response"]["usage"]["input_tokens"]
            assert int(row["output_tokens"]) == line["response"]["usage"]["output_tokens"]
            assert row["error_type"] == row["error_message"] == ""
        else:
            assert (row["error_type"], row["error_message"]) == (
                line["error"]["type"],
                line["error"]["message"],
            )
            assert row["text"] == row["input_tokens"] == ""
    errored = [line for line in lines if line["status"] == "errored"]
    assert errored  # hello.jsonl asks the simulator for one overloaded_error

    target = running.workdir / "errored.csv"
    code, _, err = cli(
        running,
        "results",
        batch_id,
        "--status",
        "errored",
        "--format",
        "csv",
        "--output",
        str(target),
        "--server-url",
        url,
    )
    assert code == 0 and err == f"wrote {len(errored)} results to {target}\n"
    assert [row["custom_id"] for row in csv.DictReader(target.open())] == [
        line["custom_id"] for line in errored
    ]

    code, out, err = cli(running, "deliveries", batch_id, "--server-url", url)
    assert code == 0 and err == f"no delivery attempt yet for {batch_id}\n"
    code, _, err = cli(running, "redeliver", batch_id, "--server-url", url)
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ")


def test_a_submission_that_keeps_failing_says_why(running: Cluster) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # the provider: nothing listens there
    running.env["LONGOPS_SIMULATOR_URL"] = closed
    url = running.start_server("api")
    code, out, err = cli(running, "submit", "hello.jsonl", "--provider", "simulator", "--server-url", url)
    assert code == 0, err
    batch_id = out.strip()

    with Client(base_url=url) as client:

        def retrying() -> Batch | None:
            batch = client.batches.retrieve(batch_id)
            return batch if batch.provider_batches and batch.provider_batches[0].error else None

        batch = wait_for(retrying, 60, "the submission to fail once")
        part = batch.provider_batches[0]
        assert part.status == "created" and part.submit_attempts >= 1 and part.next_action_at is not None
        assert part.error is not None
        reason = f"{part.error.type}: {part.error.message}"
        note = batch.waiting_on()
        assert note is not None and note.startswith("submission retrying after attempt ")

        seen: list[str | None] = []
        with pytest.raises(WaitTimeout):
            client.batches.wait(batch_id, timeout=0, on_progress=lambda b: seen.append(b.waiting_on()))
        assert seen and seen[0] is not None and part.error.type in seen[0]

    code, out, _ = cli(running, "status", batch_id, "--server-url", url)
    assert code == 0
    assert "waiting    submission retrying after attempt" in out
    assert f"{part.id} error: {part.error.type}: " in out
    assert part.error.message.split(";")[0] in out  # whole, not cut to a table cell
    code, _, err = cli(running, "wait", batch_id, "--timeout", "0", "--server-url", url)
    assert code == 1
    assert "submission retrying after attempt" in err.splitlines()[-1] and reason.split(":")[0] in err


def test_a_provider_refusal_is_the_batch_error(running: Cluster) -> None:
    simulator = running.start_simulator()
    url = running.start_server("api")
    httpx.post(f"{simulator}/_simulator/faults", json={"create_errors": [401]}).raise_for_status()
    code, out, err = cli(
        running, "submit", "hello.jsonl", "--provider", "simulator", "--wait", "--server-url", url
    )
    assert code == 1
    batch_id = out.strip()
    with Client(base_url=url) as client:
        batch = client.batches.retrieve(batch_id)
    assert (
        batch.status == "failed" and batch.error is not None and batch.provider_batches[0].error is not None
    )
    provider_reason = f"{batch.provider_batches[0].error.type}: {batch.provider_batches[0].error.message}"
    assert batch.error.message.endswith(f"; the provider said: {provider_reason}")
    assert (
        f"error      batch_failed: no request succeeded (5 errored); the provider said: {provider_reason}"
        in err
    )
    assert err.splitlines()[-1] == f"error: batch {batch_id} ended failed"

    httpx.post(f"{simulator}/_simulator/faults", json={"create_errors": [529, 529]}).raise_for_status()
    code, out, err = cli(
        running, "submit", "hello.jsonl", "--provider", "simulator", "--wait", "--server-url", url
    )
    assert code == 0, err
    with Client(base_url=url) as client:
        batch = client.batches.retrieve(out.strip())
    assert batch.provider_batches[0].submit_attempts == 3  # two overloaded answers, then accepted
    assert batch.provider_batches[0].next_action_at is None and batch.waiting_on() is None


def test_the_api_key_works_after_the_command(running: Cluster) -> None:
    database = running.env["LONGOPS_DATABASE_URL"]
    created = run_cli(["keys", "create", "--org", "acme"], running.workdir, LONGOPS_DATABASE_URL=database)
    assert created.returncode == 0, created.stderr
    key = created.stdout.splitlines()[-1]
    url = running.start_server("api")  # a key exists: every request needs one now
    code, _, err = cli(running, "jobs", "list", "--server-url", url)
    assert code == 1 and err.count("\n") == 1 and "authentication_error" in err
    code, out, err = cli(running, "jobs", "create", "echo", "--server-url", url, "--api-key", key)
    assert code == 0, err
    job_id = out.strip()
    code, out, err = cli(running, "--api-key", key, "jobs", "status", job_id, "--json", "--server-url", url)
    assert code == 0 and json.loads(out)["id"] == job_id, err


def test_the_cli_lists_the_providers_the_server_offers(running: Cluster) -> None:
    url = running.start_server("api")
    offered = [info.name for info in Client(base_url=url).providers.list().data]
    assert {"simulator", "simulator_openai"} <= set(offered)

    code, out, err = cli(running, "providers", "--json", "--server-url", url)
    assert code == 0, err
    assert [row["name"] for row in json.loads(out)["data"]] == offered

    code, _, err = cli(running, "submit", "hello.jsonl", "--server-url", url)  # no --provider
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: --provider is required: this server offers {', '.join(offered)} (see `longops providers`)"
    ]

    code, _, err = cli(running, "submit", "hello.jsonl", "--provider", "nope", "--server-url", url)
    assert code == 1
    [line] = err.strip().splitlines()
    assert "unknown provider 'nope'" in line
    assert f"this server offers: {', '.join(sorted(offered))}" in line
