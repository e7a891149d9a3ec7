"""Large bodies are decoded in slices (``api.offload``): exactly what ``json.loads`` gives, or the
same kind of error, whatever the document."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longops.api.offload import SLICE_CHARS, decode_in_slices

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
)
documents = st.dictionaries(st.text(max_size=8), values | st.lists(values, max_size=30), max_size=6)


def decode(body: bytes) -> Any:
    return asyncio.run(decode_in_slices(body))


@settings(max_examples=200, deadline=None)
@given(
    documents, st.sampled_from([None, 0, 2]), st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")])
)
def test_a_document_decodes_as_json_loads_decodes_it(
    doc: dict[str, Any], indent: int | None, seps: tuple[str, str]
) -> None:
    body = json.dumps(doc, indent=indent, separators=seps).encode()
    assert decode(b" \n" + body + b"\r\n") == json.loads(body)


def test_a_large_array_is_decoded_across_slices_whole() -> None:
    requests = [{"custom_id": f"r{i}", "params": {"n": 2**70 + i, "text": "x" * 100}} for i in range(5000)]
    body = json.dumps({"provider": "simulator", "requests": requests, "metadata": {}}).encode()
    assert len(body) > 2 * SLICE_CHARS
    assert decode(body) == json.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": [1, 2',
        b'{"a": [1 2]}',
        b'{"a": 1,}',
        b'{"a" 1}',
        b"{a: 1}",
        b'{"a": [1]} x',
        b'{"a": [1,]}',
        b"{",
    ],
)
def test_a_malformed_document_raises_what_json_loads_raises(body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    with pytest.raises(json.JSONDecodeError):
        decode(body)


def test_other_top_levels_and_encodings_are_decoded_in_one_piece() -> None:
    assert decode(b"[1, 2]") == [1, 2]
    assert decode(json.dumps({"a": ["\u00fc"]}).encode("utf-16")) == {"a": ["\u00fc"]}
