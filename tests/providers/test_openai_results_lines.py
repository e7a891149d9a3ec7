"""OpenAI output and error file lines as a provider may send them, broken ones included.

The OpenAI adapter follows the same contract as every adapter (``longops.providers.result_lines``):
a line it cannot read errors the item it names (``invalid_results_line``), a line naming no item is
an ``UnreadableLine``, and only strict JSON with finite numbers is ever stored.
"""

from __future__ import annotations

import json

import pytest

from longops.domain.results import INVALID_RESULTS_LINE, ProviderResult, UnreadableLine
from longops.domain.statuses import ItemStatus
from longops.providers.openai import parse_output_line

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 20,
        "completion_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 4},
    },
}


def _line(custom_id: str, status_code: int, body: object) -> bytes:
    return json.dumps(
        {"id": "batch_req_1", "custom_id": custom_id, "response": {"status_code": status_code, "body": body}}
    ).encode()


def test_a_succeeded_line_keeps_its_body_and_carries_usage_and_model() -> None:
    result = parse_output_line(_line("q-1", 200, COMPLETION))
    assert isinstance(result, ProviderResult)
    assert (result.custom_id, result.status, result.error) == ("q-1", ItemStatus.SUCCEEDED, None)
    assert result.response_json is not None and json.loads(result.response_json) == COMPLETION
    assert result.model == "gpt-4o-mini-2024-07-18"
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.cache_read_input_tokens) == (15, 5)
    assert (result.usage.output_tokens, result.usage.reasoning_tokens) == (9, 4)


def test_an_error_status_errors_the_item_with_the_providers_type_or_code() -> None:
    body = {"error": {"type": None, "code": "context_length_exceeded", "message": "too long"}}
    result = parse_output_line(_line("q-2", 400, body))
    assert isinstance(result, ProviderResult)
    assert result.status == ItemStatus.ERRORED
    assert result.error == {"type": "context_length_exceeded", "message": "too long"}


@pytest.mark.parametrize(
    "line",
    [
        b'{"custom_id": "q-3", "response": {"status_code": 200, "body": {"x": NaN}}}',
        b'{"custom_id": "q-3", "response": {"status_code": "two hundred"}}',
        b'{"custom_id": "q-3", "respo',
    ],
)
def test_an_unreadable_line_that_names_its_item_errors_only_that_item(line: bytes) -> None:
    result = parse_output_line(line)
    assert isinstance(result, ProviderResult)
    assert (result.custom_id, result.status) == ("q-3", ItemStatus.ERRORED)
    assert result.error is not None and result.error["type"] == INVALID_RESULTS_LINE


@pytest.mark.parametrize("line", [b"\x00\x01 not json", b'{"custom_id": 17, "response": {}}', b"[]"])
def test_an_unreadable_line_naming_no_item_is_reported_not_raised(line: bytes) -> None:
    assert isinstance(parse_output_line(line), UnreadableLine)
