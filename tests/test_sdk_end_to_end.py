"""The whole path a user takes: SDK → API → engine → bundled simulator → results (both backends)."""

from __future__ import annotations

from typing import Any

import pytest

import longops
from tests.support.harness import requests_for
from tests.support.servers import app_in_thread


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
