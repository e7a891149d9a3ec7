"""Results lines in layouts the simulator does not write: what a provider may send, parsed exactly.

The simulator writes the provider's compact layout, which takes the fast path of
``parse_result_line``; these lines take the general path (other spacing, other key order), where
the message is decoded and encoded again, and must come out as text every database can store.
"""

from __future__ import annotations

import json

import pytest

from longops.domain.results import INVALID_RESULTS_LINE, ProviderResult, UnreadableLine
from longops.domain.statuses import ItemStatus
from longops.providers.anthropic import parse_result_line

MESSAGE = {
    "id": "msg_1",
    "content": [{"type": "text", "text": "Grüße, 世界 👋"}],
    "usage": {"output_tokens": 7},
}


def test_spaced_line_with_other_key_order_keeps_the_message_and_its_text() -> None:
    line = json.dumps({"result": {"message": MESSAGE, "type": "succeeded"}, "custom_id": "q-1"}, indent=1)
    result = parse_result_line(line.replace("\n", " "))
    assert isinstance(result, ProviderResult)
    assert (result.custom_id, result.status, result.error) == ("q-1", ItemStatus.SUCCEEDED, None)
    assert result.response_json is not None
    assert json.loads(result.response_json) == MESSAGE
    assert "世界 👋" in result.response_json  # stored as text, not as \u escapes


def test_lone_surrogate_escape_is_kept_escaped_so_the_response_can_be_stored() -> None:
    # A text cut between the two halves of an emoji's surrogate pair: valid JSON, but the decoded
    # string has no UTF-8 encoding, so a database write of it would fail on every retry.
    line = b'{"custom_id": "q-2", "result": {"type": "succeeded", "message": {"text": "cut \\ud83d"}}}'
    result = parse_result_line(line)
    assert isinstance(result, ProviderResult)
    assert result.status == ItemStatus.SUCCEEDED
    assert result.response_json is not None
    result.response_json.encode()  # raises UnicodeEncodeError if a lone surrogate got through
    assert "\\ud83d" in result.response_json
    assert json.loads(result.response_json) == {"text": "cut \ud83d"}


@pytest.mark.parametrize(
    "line",
    [
        b'{"custom_id": 17, "result": {"type": "succeeded", "message": {}}}',
        b'{"custom_id": null, "result": {"type": "errored", "error": {"type": "error"}}}',
        b'{"result": {"type": "succeeded", "message": {"x": NaN}}}',
        b"\x00\x01 not json",
    ],
)
def test_unreadable_line_naming_no_item_is_reported_not_raised(line: bytes) -> None:
    result = parse_result_line(line)
    assert isinstance(result, UnreadableLine)
    assert repr(line[:20])[2:-1] in result.reason


@pytest.mark.parametrize(
    "line",
    [
        b'{"custom_id": "q-3", "result": {"type": "sideways"}}',
        b'{"custom_id": "q-3"}',
        b'{"custom_id":"q-3","result":{"type":"succeeded","message":{"cut": "in the midd',
        b'{"custom_id":"q-3","result":{"type":"succeeded","message":{"v":NaN}}}',
        b'{"custom_id":"q-3","result":{"type":"succeeded","message":{"t":"\xff\xfe"}}}',
        b'{"custom_id": "q-3", "result": {"type": "errored", "error": "not an object"}}',
    ],
)
def test_unreadable_line_naming_an_item_errors_that_item(line: bytes) -> None:
    result = parse_result_line(line)
    assert isinstance(result, ProviderResult)
    assert (result.custom_id, result.status, result.response_json) == ("q-3", ItemStatus.ERRORED, None)
    assert result.error is not None and result.error["type"] == INVALID_RESULTS_LINE
    json.dumps(result.error, allow_nan=False)


def test_errored_line_with_odd_fields_gives_a_textual_error_without_nul() -> None:
    line = (
        b'{"custom_id": "q-5", "result": {"type": "errored", '
        b'"error": {"type": 7, "message": {"a": "b\\u0000"}}}}'
    )
    result = parse_result_line(line)
    assert isinstance(result, ProviderResult) and result.error is not None
    assert result.error == {"type": "7", "message": '{"a":"b\\u0000"}'}


def test_a_nul_in_a_message_is_kept_escaped_so_postgresql_can_store_it() -> None:
    line = b'{"custom_id": "q-6", "result": {"type": "succeeded", "message": {"text": "a\\u0000b"}}}'
    result = parse_result_line(line)
    assert isinstance(result, ProviderResult) and result.response_json is not None
    assert "\x00" not in result.response_json
    assert json.loads(result.response_json) == {"text": "a\x00b"}
