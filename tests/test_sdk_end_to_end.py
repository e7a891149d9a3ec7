"""The whole path a user takes: SDK → API → engine → bundled simulator → results (both backends).

Webhooks go to ``Receiver``, a real HTTP server on a loopback port (hence ``webhook_allow_private``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import longops
from longops.cli import app as cli_app
from longops.client import IngestError
from longops.domain.schemas import Job
from tests.support.harness import requests_for
from tests.support.noop_handlers import NOOP_JOB_TYPE
from tests.support.receiver import Answer, Receiver, wait_until
from tests.support.servers import app_in_loop, app_in_thread

NOOP_HANDLERS = "tests.support.noop_handlers"


def test_batch_with_one_errored_item_completes(make_settings: Any) -> None:
    progress: list[str] = []
    with (
        app_in_thread(make_settings(simulator_processing_seconds=0.5)) as app,
        longops.Client(base_url=app.url) as client,
    ):
        batch = client.batches.create(
            provider="simulator",
            requests=requests_for("alpha", "beta", "[sim:error] gamma", "delta"),
            metadata={"team": "search"},
        )
        assert batch.status in ("created", "running")
        assert batch.request_counts.total == 4
        done = client.batches.wait(batch.id, timeout=60, on_progress=lambda b: progress.append(b.status))
        assert done.status == "completed"
        assert done.completed_at is not None and done.started_at is not None
        assert done.metadata == {"team": "search"}
        assert done.request_counts.model_dump() == {
            "total": 4,
            "processing": 0,
            "succeeded": 3,
            "errored": 1,
            "cancelled": 0,
            "expired": 0,
        }
        assert progress and progress[-1] == "completed"
        (pb,) = done.provider_batches
        assert pb.status == "completed" and pb.processing_status == "ended"

        items = client.batches.items(batch.id).data
        assert [item.custom_id for item in items] == ["r0", "r1", "r2", "r3"]
        assert [item.status for item in items] == ["succeeded", "succeeded", "errored", "succeeded"]
        assert items[0].response["content"][0]["text"]
        assert items[2].error is not None and items[2].error.type == "overloaded_error"
        assert all(item.provider_batch_id == pb.id for item in items)

        lines = {line.custom_id: line for line in client.batches.results(batch.id)}
        assert set(lines) == {"r0", "r1", "r2", "r3"}
        assert lines["r2"].status == "errored" and lines["r2"].response is None
        assert lines["r1"].response == items[1].response

        job = client.jobs.retrieve(batch.id)
        assert job.job_type == "llm_batch" and job.status == "completed"
        listed = client.batches.list(status="completed")
        assert [b.id for b in listed.data] == [batch.id]


def test_sdk_errors_carry_status_and_type(make_settings: Any) -> None:
    with app_in_thread(make_settings()) as app, longops.Client(base_url=app.url) as client:
        with pytest.raises(longops.NotFoundError) as missing:
            client.batches.retrieve("job_doesnotexist")
        assert missing.value.status_code == 404 and missing.value.type == "not_found"
        with pytest.raises(longops.ValidationError) as invalid:
            client.batches.create(provider="simulator", requests=[{"custom_id": "bad id", "params": {}}])
        assert "custom_id" in invalid.value.message
        assert client.batches.list().data == []


# --- files, batch_ingest, jobs, deliveries --------------------------------------------------------


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    """One JSON value a line; a ``str`` is written as is (a line that is not valid JSON)."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def file_settings(make_settings: Any, tmp_path: Path, **overrides: Any) -> Any:
    values = {"files_dir": str(tmp_path / "files"), "worker_poll_seconds": 0.1, "handlers": NOOP_HANDLERS}
    return make_settings(**(values | overrides))


def test_create_from_file_reaches_completed(make_settings: Any, tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "batch.jsonl", requests_for("alpha", "beta", "[sim:error] gamma", "delta", "epsilon")
    )
    size = source.stat().st_size
    sent: list[int] = []
    polls: list[Job] = []
    with (
        app_in_thread(file_settings(make_settings, tmp_path)) as app,
        longops.Client(base_url=app.url) as client,
    ):
        uploaded = client.files.upload(source, filename="named.jsonl")
        assert (uploaded.object, uploaded.filename, uploaded.bytes) == ("file", "named.jsonl", size)
        assert uploaded.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
        assert client.files.retrieve(uploaded.id) == uploaded

        batch = client.batches.create_from_file(
            source,
            provider="simulator",
            metadata={"team": "search"},
            poll_interval=0.05,
            timeout=30,
            on_progress=polls.append,
            on_upload_progress=sent.append,
        )
        assert sent[-1] == size
        ingest = polls[-1]
        assert ingest.job_type == "batch_ingest" and ingest.status == "completed"
        assert ingest.result["batch_id"] == batch.id and ingest.result["requests"] == 5
        assert ingest.progress is not None and ingest.progress.completed == ingest.progress.total == size
        assert batch.metadata == {"team": "search"} and batch.request_counts.total == 5

        done = client.batches.wait(batch.id, timeout=30, poll_interval=0.05)
        assert done.status == "completed"
        counts = done.request_counts
        assert (counts.total, counts.succeeded, counts.errored, counts.processing) == (5, 4, 1, 0)
        assert [line.custom_id for line in client.batches.results(batch.id)] == [f"r{i}" for i in range(5)]


def test_create_from_file_with_a_bad_line_names_it_and_creates_nothing(
    make_settings: Any, tmp_path: Path
) -> None:
    good = requests_for("alpha", "beta")
    source = write_jsonl(tmp_path / "bad.jsonl", [*good, {"custom_id": "r2"}, *requests_for("delta")])
    with (
        app_in_thread(file_settings(make_settings, tmp_path)) as app,
        longops.Client(base_url=app.url) as client,
    ):
        with pytest.raises(IngestError) as caught:
            client.batches.create_from_file(source, provider="simulator", poll_interval=0.05, timeout=30)
        error = caught.value
        assert isinstance(error, longops.APIError)
        assert error.line == 3 and error.type == "validation_error"
        assert error.message.startswith("line 3 ") and "params" in error.message
        assert error.job.status == "failed" and error.job.job_type == "batch_ingest"
        assert client.batches.list().data == []

        job = client.batches.create_from_file(source, provider="simulator", wait_for_ingest=False)
        assert job.job_type == "batch_ingest" and job.status in ("pending", "running")
        ended = client.jobs.wait(job.id, timeout=30, poll_interval=0.05)
        assert ended.status == "failed" and ended.error is not None and "line 3" in ended.error.message


def test_job_create_is_idempotent(make_settings: Any, tmp_path: Path) -> None:
    with (
        app_in_thread(file_settings(make_settings, tmp_path)) as app,
        longops.Client(base_url=app.url) as client,
    ):
        first = client.jobs.create(job_type=NOOP_JOB_TYPE, input={"n": 1}, idempotency_key="nightly-1")
        again = client.jobs.create(job_type=NOOP_JOB_TYPE, input={"n": 1}, idempotency_key="nightly-1")
        other = client.jobs.create(job_type=NOOP_JOB_TYPE, input={"n": 1})
        assert again.id == first.id and other.id != first.id
        with pytest.raises(longops.ConflictError) as conflict:
            client.jobs.create(job_type=NOOP_JOB_TYPE, input={"n": 2}, idempotency_key="nightly-1")
        assert conflict.value.type == "idempotency_conflict"
        assert client.jobs.wait(first.id, timeout=30, poll_interval=0.05).result == {"n": 1}
        assert [j.id for j in client.jobs.list(job_type=NOOP_JOB_TYPE).data] == [other.id, first.id]


async def test_async_client_ingests_a_file_and_lists_deliveries(make_settings: Any, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "batch.jsonl", requests_for("alpha", "beta"))
    settings = file_settings(
        make_settings, tmp_path, webhook_allow_private=True, webhook_backoff_seconds=0.05
    )
    with Receiver().running() as receiver:
        receiver.answer(Answer(500), Answer(200))
        async with app_in_loop(settings) as app, longops.AsyncClient(base_url=app.url) as client:
            batch = await client.batches.create_from_file(
                source, provider="simulator", callback_url=receiver.url, poll_interval=0.05, timeout=30
            )
            assert batch.callback_url == receiver.url
            assert (await client.batches.wait(batch.id, timeout=30, poll_interval=0.05)).status == "completed"

            async def attempts_reach(count: int) -> bool:
                return len(await client.jobs.deliveries(batch.id)) >= count

            await wait_until(lambda: attempts_reach(2), timeout=20, what="two delivery attempts")
            attempts = await client.batches.deliveries(batch.id)
            assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 200)]
            assert attempts[0].error and attempts[1].error is None
            assert await client.jobs.deliveries(batch.id) == attempts

            event = await client.batches.redeliver(batch.id)
            assert (event.object, event.type) == ("webhook_event", "batch.completed")
            await wait_until(lambda: attempts_reach(3), timeout=20, what="the redelivery")
            attempts = await client.jobs.deliveries(batch.id)
            assert attempts[2].status_code == 200
            with pytest.raises(longops.NotFoundError):
                await client.jobs.redeliver("job_doesnotexist")
    assert [json.loads(hit.body)["data"]["id"] for hit in receiver.hits] == [batch.id] * 3


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_submit_uploads_and_waits(make_settings: Any, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "batch.jsonl", requests_for("alpha", "[sim:error] beta", "gamma"))
    bad = write_jsonl(tmp_path / "bad.jsonl", [*requests_for("alpha", "beta"), '{"custom_id": "r2", '])
    output = tmp_path / "out.jsonl"
    runner = CliRunner()
    with app_in_thread(file_settings(make_settings, tmp_path)) as app:
        base = ["--server-url", app.url, "submit", "--provider", "simulator", "--upload-threshold", "0"]
        result = runner.invoke(cli_app, [*base, str(source), "--wait", "--output", str(output)])
        assert result.exit_code == 0, result.output
        batch_id = result.stdout.strip()
        assert batch_id.startswith("job_") and result.stdout == f"{batch_id}\n"
        lines = [json.loads(line) for line in output.read_text().splitlines()]
        assert [(line["custom_id"], line["status"]) for line in lines] == [
            ("r0", "succeeded"),
            ("r1", "errored"),
            ("r2", "succeeded"),
        ]
        assert "wrote 3 results" in result.stderr and "completed" in result.stderr

        failed = runner.invoke(cli_app, [*base, str(bad)])
        assert failed.exit_code == 1 and failed.stdout == ""
        (error,) = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
        assert error.startswith(f"error: {bad} line 3: is not valid JSON")
        assert failed.stderr.endswith(error + "\n"), "the error is the last line, after the bar"
        with longops.Client(base_url=app.url) as client:
            assert [b.id for b in client.batches.list().data] == [batch_id]
