"""Submitter and poller, cycle by cycle, on both backends, against the simulator (issue: LLM batches)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import text

from longops.store.db import Database
from tests.support.harness import harness, requests_for


def _by_custom_id(lines: list[str]) -> dict[str, dict[str, Any]]:
    parsed = [json.loads(line) for line in lines]
    ids = [line["custom_id"] for line in parsed]
    assert len(ids) == len(set(ids)), f"duplicated results: {Counter(ids)}"
    return {line["custom_id"]: line for line in parsed}


async def test_ended_provider_batch_is_final_and_never_polled_again(make_settings: Any) -> None:
    settings = make_settings(anthropic_max_requests=2)
    async with harness(settings) as h:
        batch = await h.create_batch(requests_for("hello", "[sim:error] boom", "[sim:slow] wait", "later"))
        await h.submitter.run_once()
        batch = await h.batch(batch["id"])
        assert batch["status"] == "running"
        ended, running = batch["provider_batches"]
        assert (ended["request_count"], running["request_count"]) == (2, 2)

        await h.poll(2)
        batch = await h.batch(batch["id"])
        ended, running = batch["provider_batches"]
        assert ended["status"] == "completed"
        assert ended["processing_status"] == "ended"
        assert running["status"] == "running"
        assert running["processing_status"] == "in_progress"
        results = _by_custom_id(await h.results(batch["id"]))
        assert set(results) == {"r0", "r1"}
        assert results["r0"]["status"] == "succeeded"
        assert results["r0"]["response"]["type"] == "message"
        assert results["r1"]["status"] == "errored"
        assert results["r1"]["error"]["type"] == "overloaded_error"

        frozen_poll = ended["last_polled_at"]
        running_polls = [running["last_polled_at"]]
        frozen_results = await h.results(batch["id"])
        retrieves_before = (await h.sim_stats())["by_batch"][ended["provider_batch_id"]].get("retrieve", 0)
        for _ in range(3):
            await h.poll()
            batch = await h.batch(batch["id"])
            ended_now, running_now = batch["provider_batches"]
            assert ended_now["last_polled_at"] == frozen_poll
            running_polls.append(running_now["last_polled_at"])
        assert running_polls == sorted(running_polls) and len(set(running_polls)) == 4
        assert await h.results(batch["id"]) == frozen_results
        stats = await h.sim_stats()
        assert stats["by_batch"][ended["provider_batch_id"]].get("retrieve", 0) == retrieves_before
        assert batch["status"] == "running"
        assert batch["request_counts"] == {
            "total": 4,
            "processing": 2,
            "succeeded": 1,
            "errored": 1,
            "cancelled": 0,
            "expired": 0,
        }


async def test_provider_errors_timeouts_and_cut_streams_lose_nothing(make_settings: Any) -> None:
    settings = make_settings(ingest_chunk_size=2)
    async with harness(settings) as h:
        texts = [f"question {i}" for i in range(7)] + ["[sim:error] no"]
        batch = await h.create_batch(requests_for(*texts))
        await h.submitter.run_once()
        await h.faults(retrieve_errors=[500, 500])
        await h.poll(2)
        batch = await h.batch(batch["id"])
        (pb,) = batch["provider_batches"]
        assert batch["status"] == "running"
        assert pb["status"] == "running"
        assert pb["error"]["message"]

        # A retrieve that outlives PROVIDER_TIMEOUT_SECONDS, then a results stream cut after 3 lines.
        await h.faults(retrieve_delay_seconds=5, retrieve_delay_count=1)
        await h.faults(results_cut_after_lines=3, results_cut_count=1)
        for _ in range(20):
            await h.poll()
            batch = await h.batch(batch["id"])
            if batch["status"] != "running":
                break
        assert batch["status"] == "completed"
        assert batch["request_counts"]["succeeded"] == 7
        assert batch["request_counts"]["errored"] == 1
        assert batch["request_counts"]["processing"] == 0
        results = _by_custom_id(await h.results(batch["id"]))
        assert len(results) == 8
        stats = await h.sim_stats()
        assert stats["by_batch"][pb["provider_batch_id"]]["results"] >= 2  # the cut stream was read again
        items = (await h.api.get(f"/v1/batches/{batch['id']}/items", params={"limit": 100})).json()["data"]
        assert len(items) == 8
        assert {item["attempts"] for item in items} == {1}


async def test_cancel_while_running_waits_for_the_provider(make_settings: Any) -> None:
    async with harness(make_settings(), cancel_seconds=3600) as h:
        batch = await h.create_batch(requests_for("one", "two", "[sim:slow] three"))
        await h.submitter.run_once()
        await h.poll()
        cancelled = await h.api.post(f"/v1/batches/{batch['id']}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "running"
        assert cancelled.json()["cancel_requested_at"] is not None

        await h.poll(2)
        batch = await h.batch(batch["id"])
        (pb,) = batch["provider_batches"]
        assert pb["processing_status"] == "canceling"
        assert batch["status"] == "running"
        again = await h.api.post(f"/v1/batches/{batch['id']}/cancel")
        assert again.status_code == 200 and again.json()["status"] == "running"

        finish = await h.simulator.post(f"/_simulator/batches/{pb['provider_batch_id']}/finish")
        assert finish.status_code == 200
        await h.poll()
        batch = await h.batch(batch["id"])
        assert batch["status"] == "cancelled"
        assert batch["stop_reason"] == "cancelled"
        assert batch["completed_at"] is not None
        assert batch["request_counts"]["succeeded"] == 2
        assert batch["request_counts"]["cancelled"] == 1
        results = _by_custom_id(await h.results(batch["id"]))
        assert results["r0"]["status"] == "succeeded" and results["r0"]["response"] is not None
        assert results["r2"]["status"] == "cancelled"
        final = await h.api.post(f"/v1/batches/{batch['id']}/cancel")
        assert final.status_code == 200 and final.json()["status"] == "cancelled"


async def test_cancel_of_a_finished_batch_is_409(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        batch = await h.create_batch(requests_for("only"))
        await h.submitter.run_once()
        await h.poll()
        assert (await h.batch(batch["id"]))["status"] == "completed"
        response = await h.api.post(f"/v1/batches/{batch['id']}/cancel")
        assert response.status_code == 409
        assert response.json()["error"]["type"] == "invalid_transition"
        assert (await h.batch(batch["id"]))["status"] == "completed"


async def test_cancel_before_submission_ends_at_once(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        batch = await h.create_batch(requests_for("a", "b"))
        response = await h.api.post(f"/v1/batches/{batch['id']}/cancel")
        assert response.json()["status"] == "cancelled"
        assert response.json()["request_counts"]["cancelled"] == 2
        await h.submitter.run_once()
        assert (await h.sim_stats())["calls"].get("create", 0) == 0


async def test_rejected_submission_errors_items_and_fails_batch(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        await h.faults(create_errors=[400])
        batch = await h.create_batch(requests_for("a", "b"))
        await h.submitter.run_once()
        batch = await h.batch(batch["id"])
        assert batch["status"] == "failed"
        assert batch["stop_reason"] == "provider_error"
        assert batch["request_counts"]["errored"] == 2
        (pb,) = batch["provider_batches"]
        assert pb["status"] == "failed" and "Simulated" in pb["error"]["message"]


async def test_overloaded_create_is_retried_without_paying_twice(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        await h.faults(create_errors=[529])
        batch = await h.create_batch(requests_for("a"))
        await h.submitter.run_once()
        assert (await h.batch(batch["id"]))["status"] == "created"
        for _ in range(50):
            await asyncio.sleep(0.05)  # the retry backoff is the thing being waited for
            await h.submitter.run_once()
            if (await h.batch(batch["id"]))["status"] == "running":
                break
        stats = await h.sim_stats()
        assert stats["calls"]["create"] == 2
        assert stats["batches"] == 1


async def test_unknown_create_outcome_is_reconciled_not_resubmitted(make_settings: Any) -> None:
    async with harness(make_settings()) as h:
        await h.faults(create_applied_errors=[500])
        batch = await h.create_batch(requests_for("a", "b", "c"))
        await h.submitter.run_once()
        assert (await h.batch(batch["id"]))["status"] == "created"
        for _ in range(50):
            await asyncio.sleep(0.05)  # the retry backoff is the thing being waited for
            await h.submitter.run_once()
            if (await h.batch(batch["id"]))["status"] == "running":
                break
        stats = await h.sim_stats()
        assert stats["batches"] == 1, "the batch created before the 500 must be adopted, not sent again"
        assert stats["calls"]["create"] == 1
        await h.poll()
        assert (await h.batch(batch["id"]))["status"] == "completed"


async def test_provider_batches_of_one_batch_ending_together_end_the_batch(make_settings: Any) -> None:
    """Several provider batches of one batch complete in concurrent transactions of one cycle."""
    async with harness(make_settings(anthropic_max_requests=2, poll_concurrency=8)) as h:
        ids = [(await h.create_batch(requests_for(*[f"q{i}" for i in range(7)])))["id"] for _ in range(3)]
        await h.submitter.run_once()
        await h.poll()
        for batch_id in ids:
            batch = await h.batch(batch_id)
            assert len(batch["provider_batches"]) == 4
            assert batch["status"] == "completed", batch
            assert batch["request_counts"]["succeeded"] == 7


async def test_batches_ending_together_keep_their_own_results_and_missing_ones_error(
    make_settings: Any,
) -> None:
    """Batches completed in one transaction: the same custom_ids in each, one result lost by the
    provider (errored ``missing_result``), one batch with a callback and one failed batch."""
    async with harness(make_settings()) as h:
        plain = await h.create_batch(requests_for("a0", "a1", "a2"))
        lossy = await h.create_batch(requests_for("b0", "[sim:lost] b1", "b2"))
        failing = await h.create_batch(requests_for("[sim:error] c0", "[sim:error] c1"))
        await h.submitter.run_once()
        await h.poll()
        plain, lossy, failing = [await h.batch(b["id"]) for b in (plain, lossy, failing)]
        assert (plain["status"], lossy["status"], failing["status"]) == ("completed", "completed", "failed")
        assert plain["request_counts"]["succeeded"] == 3
        assert (lossy["request_counts"]["succeeded"], lossy["request_counts"]["errored"]) == (2, 1)
        assert failing["request_counts"]["errored"] == 2
        assert failing["error"]["type"] == "batch_failed"
        lossy_results = _by_custom_id(await h.results(lossy["id"]))
        assert lossy_results["r1"]["status"] == "errored"
        assert lossy_results["r1"]["error"]["type"] == "missing_result"
        assert lossy_results["r2"]["response"]["content"][0]["text"].endswith("b2")
        plain_results = _by_custom_id(await h.results(plain["id"]))
        assert plain_results["r1"]["response"]["content"][0]["text"].endswith("a1")


async def test_large_provider_batches_are_sent_whole_and_in_order(make_settings: Any) -> None:
    """The submitter reads a provider batch's requests in chunks while it sends them: 4,500 requests
    in provider batches of at most 3,000 (3,000 + 1,500) arrive whole, in order, and complete."""
    async with harness(make_settings(anthropic_max_requests=3000)) as h:
        batch = await h.create_batch(requests_for(*(f"q{i}" for i in range(4500))))
        await h.submitter.run_once()
        batch = await h.batch(batch["id"])
        assert [pb["request_count"] for pb in batch["provider_batches"]] == [3000, 1500]
        stats = await h.sim_stats()
        assert stats["batches"] == 2 and stats["calls"]["create"] == 2
        await h.poll()
        batch = await h.batch(batch["id"])
        assert batch["status"] == "completed", batch
        assert batch["request_counts"]["succeeded"] == 4500
        results = [json.loads(line) for line in await h.results(batch["id"])]
        assert [r["custom_id"] for r in results] == [f"r{i}" for i in range(4500)]
        assert all(r["response"]["content"][0]["text"] == f"q{i}" for i, r in enumerate(results))


async def _refuse_responses_containing(db: Database, marker: str) -> None:
    """A database trigger that refuses to store a response holding ``marker``: what a poison batch
    looks like to the poller (the database rejects its results, on every retry)."""
    async with db.write() as conn:
        if db.is_postgres:
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse_response() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'response refused by the test'; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_response BEFORE UPDATE ON items FOR EACH ROW "
                    f"WHEN (NEW.response LIKE '%{marker}%') EXECUTE FUNCTION refuse_response()"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_response BEFORE UPDATE ON items "
                    f"WHEN NEW.response LIKE '%{marker}%' "
                    "BEGIN SELECT RAISE(ABORT, 'response refused by the test'); END"
                )
            )


async def _stop_refusing(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(text("DROP TRIGGER refuse_response" + (" ON items" if db.is_postgres else "")))


@pytest.mark.parametrize("chunk_size", [1000, 2], ids=["in-the-completing-group", "in-an-earlier-chunk"])
async def test_batch_whose_results_are_refused_does_not_hold_back_the_others(
    make_settings: Any, chunk_size: int
) -> None:
    """One batch's results are refused by the database (with 1,000 per chunk, in the group that
    completes the batches ending in the cycle; with 2, in the first chunk of its stream): the other
    batches complete in the same cycle, the refused one stays running with an ``ingest_failed``
    error that shows none of the refused data, and completes once the database takes its results."""
    async with harness(make_settings(ingest_chunk_size=chunk_size)) as h:
        await _refuse_responses_containing(h.db, "refuse-me")
        plain = await h.create_batch(requests_for("a0", "a1", "a2"))
        poisoned = await h.create_batch(requests_for("refuse-me b0", "b1", "b2"))
        other = await h.create_batch(requests_for("c0", "c1", "c2"))
        await h.submitter.run_once()
        await h.poll()  # does not raise: the refusal is the batch's own
        plain, poisoned, other = [await h.batch(b["id"]) for b in (plain, poisoned, other)]
        assert (plain["status"], poisoned["status"], other["status"]) == ("completed", "running", "completed")
        assert plain["request_counts"]["succeeded"] == other["request_counts"]["succeeded"] == 3
        (pb,) = poisoned["provider_batches"]
        assert pb["status"] == "running"
        assert pb["error"]["type"] == "ingest_failed"
        assert (
            "refuse-me" not in pb["error"]["message"] and "refused by the test" not in pb["error"]["message"]
        )
        async with h.db.read() as conn:
            errors = await conn.execute(
                text(f"SELECT poll_errors FROM provider_batches WHERE id = '{pb['id']}'")
            )
            assert errors.scalar_one() == 1

        await _stop_refusing(h.db)
        await h.poll(times=3)
        poisoned = await h.batch(poisoned["id"])
        assert poisoned["status"] == "completed", poisoned
        assert poisoned["request_counts"]["succeeded"] == 3
        assert poisoned["provider_batches"][0]["error"] is None
        results = _by_custom_id(await h.results(poisoned["id"]))
        assert results["r0"]["response"]["content"][0]["text"].endswith("refuse-me b0")
