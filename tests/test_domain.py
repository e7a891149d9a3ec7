"""The lifecycle table, the batch outcome rule and the provider status mapping (DESIGN §2)."""

from __future__ import annotations

import itertools

import pytest

from longops.domain.lock_keys import advisory_lock_key
from longops.domain.outcome import batch_outcome
from longops.domain.provider_status import (
    ProviderPhase,
    UnknownProviderStatus,
    anthropic_item_status,
    anthropic_phase,
    openai_phase,
)
from longops.domain.requests import BatchValidationError, parse_requests
from longops.domain.schemas import RequestCounts
from longops.domain.statuses import ItemStatus, JobStatus, allowed_from, can_transition

EXPECTED = {
    "created": {"pending", "running", "failed", "cancelled"},
    "pending": {"running", "failed", "cancelled", "expired"},
    "running": {"completed", "failed", "cancelled", "expired"},
    "completed": set(),
    "failed": set(),
    "cancelled": set(),
    "expired": set(),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(JobStatus, JobStatus)))
def test_every_transition_pair(current: JobStatus, target: JobStatus) -> None:
    assert can_transition(current, target) is (target.value in EXPECTED[current.value])
    assert (current in allowed_from(target)) is (target.value in EXPECTED[current.value])


def test_terminal_statuses_never_change() -> None:
    for status in JobStatus:
        assert status.is_terminal is (EXPECTED[status.value] == set())


@pytest.mark.parametrize(
    ("counts", "cancel", "expected"),
    [
        (RequestCounts(total=3, succeeded=1, errored=2), False, JobStatus.COMPLETED),
        (RequestCounts(total=3, succeeded=1, errored=2), True, JobStatus.CANCELLED),
        (RequestCounts(total=2, errored=1, expired=1), False, JobStatus.EXPIRED),
        (RequestCounts(total=2, errored=2), False, JobStatus.FAILED),
        (RequestCounts(total=2, cancelled=2), True, JobStatus.CANCELLED),
    ],
)
def test_batch_outcome(counts: RequestCounts, cancel: bool, expected: JobStatus) -> None:
    assert batch_outcome(counts, cancel_requested=cancel, any_provider_batch_failed=False).status == expected


def test_anthropic_mapping_never_treats_canceling_as_final() -> None:
    assert anthropic_phase("in_progress") == ProviderPhase.RUNNING
    assert anthropic_phase("canceling") == ProviderPhase.RUNNING
    assert anthropic_phase("ended") == ProviderPhase.ENDED
    with pytest.raises(UnknownProviderStatus):
        anthropic_phase("done")


def test_openai_mapping() -> None:
    running = ["validating", "in_progress", "finalizing", "cancelling"]
    assert {openai_phase(s) for s in running} == {ProviderPhase.RUNNING}
    assert {openai_phase(s) for s in ["completed", "expired", "cancelled"]} == {ProviderPhase.ENDED}
    assert openai_phase("failed") == ProviderPhase.FAILED


def test_canceled_is_spelled_cancelled() -> None:
    assert anthropic_item_status("canceled") == ItemStatus.CANCELLED
    assert anthropic_item_status("succeeded") == ItemStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "requests"),
        ([{"custom_id": "a b", "params": {}}], "requests[0] (custom_id 'a b').custom_id"),
        ([{"custom_id": "x" * 65, "params": {}}], "custom_id"),
        ([{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}], "requests[1] (custom_id 'a')"),
        ([{"custom_id": "a", "params": []}], "requests[0] (custom_id 'a').params"),
        ([{"custom_id": "a"}], "requests[0] (custom_id 'a').params"),
        (["nope"], "requests[0]"),
        ([{"custom_id": "a", "params": {}, "extra": 1}], "requests[0] (custom_id 'a')"),
    ],
)
def test_request_validation_names_the_request(raw: object, field: str) -> None:
    with pytest.raises(BatchValidationError) as info:
        parse_requests(raw, openai_endpoint=None, max_requests=10)
    assert field in str(info.value)


def test_openai_lines_are_accepted_for_openai_family() -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}
    (parsed,) = parse_requests([line], openai_endpoint="/v1/chat/completions", max_requests=10)
    assert parsed.params_json == '{"model":"m"}'
    with pytest.raises(BatchValidationError):
        parse_requests([line], openai_endpoint=None, max_requests=10)
    with pytest.raises(BatchValidationError, match=r"requests\[0\] \(custom_id 'a'\)\.url"):
        parse_requests([line], openai_endpoint="/v1/embeddings", max_requests=10)


def test_request_count_limit() -> None:
    with pytest.raises(BatchValidationError, match="MAX_BATCH_REQUESTS"):
        parse_requests(
            [{"custom_id": str(i), "params": {}} for i in range(3)],
            openai_endpoint=None,
            max_requests=2,
        )


def test_advisory_lock_keys_never_change_between_versions() -> None:
    """Instances of an older and a newer version running side by side (a rolling upgrade) must take
    the same locks: these keys are what version 0.1.0 used for its leader lock and its migrations."""
    assert advisory_lock_key("longops-leader") == -6606070647359932554
    assert advisory_lock_key("longops-migrations") == -5678251699314783315
    assert advisory_lock_key("a") != advisory_lock_key("b")
    assert all(-(2**63) <= advisory_lock_key(name) < 2**63 for name in ("", "x" * 1000, "é"))
