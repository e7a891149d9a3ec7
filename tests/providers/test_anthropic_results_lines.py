"""Results lines in layouts the simulator does not write: what a provider may send, parsed exactly.

The simulator writes the provider's compact layout, which takes the fast path of
``parse_result_line``; these lines take the general path (other spacing, other key order), where
the message is decoded and encoded again, and must come out as text every database can store.
"""

from __future__ import annotations

import json

import pytest

from longops.domain.statuses import ItemStatus
from longops.providers.anthropic import parse_result_line
from longops.providers.base import ProviderOutcomeUnknown

MESSAGE = {
    "id": "msg_1",
    "content": [{"type": "text", "text": "Grüße, 世界 👋"}],
    "usage": {"output_tokens": 7},
}


def test_spaced_line_with_other_key_order_keeps_the_message_and_its_text() -> None:
    line = json.dumps({"result": {"message": MESSAGE, "type": "succeeded"}, "custom_id": "q-1"}, indent=1)
    result = parse_result_line(line.replace("\n", " "))
    assert (result.custom_id, result.status, result.error) == ("q-1", ItemStatus.SUCCEEDED, None)
    assert result.response_json is not None
    assert json.loads(result.response_json) == MESSAGE
    assert "世界 👋" in result.response_json  # stored as text, not as \u escapes


def test_lone_surrogate_escape_is_kept_escaped_so_the_response_can_be_stored() -> None:
    # A text cut between the two halves of an emoji's surrogate pair: valid JSON, but the decoded
    # string has no UTF-8 encoding, so a database write of it would fail on every retry.
    line = b'{"custom_id": "q-2", "result": {"type": "succeeded", "message": {"text": "cut \\ud83d"}}}'
    result = parse_result_line(line)
    assert result.status == ItemStatus.SUCCEEDED
    assert result.response_json is not None
    result.response_json.encode()  # raises UnicodeEncodeError if a lone surrogate got through
    assert "\\ud83d" in result.response_json
    assert json.loads(result.response_json) == {"text": "cut \ud83d"}


@pytest.mark.parametrize(
    "line",
    [
        '{"custom_id": 17, "result": {"type": "succeeded", "message": {}}}',
        '{"custom_id": null, "result": {"type": "errored", "error": {"type": "error"}}}',
        '{"custom_id": "q-3", "result": {"type": "sideways"}}',
        '{"custom_id": "q-4"}',
    ],
)
def test_malformed_line_is_an_unknown_outcome_naming_the_line(line: str) -> None:
    with pytest.raises(ProviderOutcomeUnknown) as raised:
        parse_result_line(line)
    assert raised.value.error_type == "invalid_results_line"
    assert line[:40] in raised.value.message
