"""Input limits (docs/security.md): just under passes, just over gets the documented status and a
message naming the field and the setting, and nothing is stored. Both backends.

The app runs with small limits so the bodies stay small; it runs in open mode (loopback, no key).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from longops.domain.limits import LimitExceeded, check_json, check_metadata
from longops.domain.requests import BatchValidationError, parse_request_line
from tests.support.harness import message, requests_for
from tests.support.servers import app_in_loop

LIMITS: dict[str, Any] = {
    "max_request_bytes": 4096,
    "max_batch_requests": 3,
    "max_metadata_keys": 4,
    "max_metadata_key_length": 16,
    "max_metadata_bytes": 100,
    "max_callback_url_length": 64,
    "max_json_depth": 8,
}
CALLBACK = "http://127.0.0.1:9/"  # allowed: the app runs with LONGOPS_WEBHOOK_ALLOW_PRIVATE


def batch(**fields: Any) -> dict[str, Any]:
    return {"provider": "simulator", "requests": requests_for("hello"), **fields}


def nested(depth: int) -> dict[str, Any]:
    """``{"a": {"a": … {}}}``, ``depth`` objects deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def sized_body(size: int) -> bytes:
    """A valid batch body of exactly ``size`` bytes (padded inside a request's params)."""
    body = batch(requests=[{"custom_id": "r0", "params": {**message("hi"), "pad": ""}}])
    base = len(json.dumps(body).encode())
    body["requests"][0]["params"]["pad"] = "x" * (size - base)
    encoded = json.dumps(body).encode()
    assert len(encoded) == size
    return encoded


@dataclass(frozen=True)
class Case:
    under: dict[str, Any]
    over: dict[str, Any]
    message: str


CASES = {
    "requests per batch": Case(
        batch(requests=requests_for("a", "b", "c")),
        batch(requests=requests_for("a", "b", "c", "d")),
        "requests: has 4 requests; at most 3 are allowed (MAX_BATCH_REQUESTS)",
    ),
    "metadata keys": Case(
        batch(metadata={f"k{i}": i for i in range(4)}),
        batch(metadata={f"k{i}": i for i in range(5)}),
        "metadata: has 5 keys; at most 4 are allowed (MAX_METADATA_KEYS)",
    ),
    "metadata key length": Case(
        batch(metadata={"k" * 16: 1}),
        batch(metadata={"k" * 17: 1}),
        "metadata: key 'kkkkkkkkkkkkkkkkk' is 17 characters long; at most 16 are allowed "
        "(MAX_METADATA_KEY_LENGTH)",
    ),
    "metadata bytes": Case(  # {"k":"…"} is 8 bytes plus the value's
        batch(metadata={"k": "x" * 92}),
        batch(metadata={"k": "x" * 93}),
        "metadata: is 101 bytes as JSON; at most 100 are allowed (MAX_METADATA_BYTES)",
    ),
    "metadata bytes, counted in UTF-8": Case(
        batch(metadata={"k": "é" * 46}),
        batch(metadata={"k": "é" * 46 + "x"}),
        "metadata: is 101 bytes as JSON; at most 100 are allowed (MAX_METADATA_BYTES)",
    ),
    "metadata depth": Case(
        batch(metadata=nested(8)),
        batch(metadata=nested(9)),
        "metadata: is nested deeper than 8 levels (MAX_JSON_DEPTH)",
    ),
    "params depth": Case(
        batch(requests=[{"custom_id": "r0", "params": nested(8)}]),
        batch(requests=[{"custom_id": "r0", "params": nested(9)}]),
        "requests[0] (custom_id 'r0').params: is nested deeper than 8 levels (MAX_JSON_DEPTH)",
    ),
    "callback_url length": Case(
        batch(callback_url=CALLBACK + "a" * (64 - len(CALLBACK))),
        batch(callback_url=CALLBACK + "a" * (65 - len(CALLBACK))),
        "callback_url: is 65 characters long; at most 64 are allowed (MAX_CALLBACK_URL_LENGTH)",
    ),
    "custom_id length": Case(
        batch(requests=[{"custom_id": "c" * 64, "params": message("hi")}]),
        batch(requests=[{"custom_id": "c" * 65, "params": message("hi")}]),
        ".custom_id: must be a string matching ^[A-Za-z0-9_-]{1,64}$",
    ),
    "unknown fields": Case(
        batch(),
        {**batch(), "metdata": {}, "priority": 1},
        "metdata, priority: unknown fields",
    ),
}


@pytest.fixture
async def client(make_settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(webhook_allow_private=True, **LIMITS)
    async with (
        app_in_loop(settings, run_engine=False) as app,
        httpx.AsyncClient(base_url=app.url, timeout=30) as http,
    ):
        yield http


async def stored(client: httpx.AsyncClient) -> int:
    response = await client.get("/v1/jobs", params={"limit": 1000})
    assert response.status_code == 200
    return len(response.json()["data"])


def assert_error(response: httpx.Response, status: int, error_type: str, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": {"type": error_type, "message": response.json()["error"]["message"]}}
    assert message in response.json()["error"]["message"], response.json()["error"]["message"]


@pytest.mark.parametrize("name", list(CASES))
async def test_limit_just_under_passes_just_over_fails_and_stores_nothing(
    client: httpx.AsyncClient, name: str
) -> None:
    case = CASES[name]
    over = await client.post("/v1/batches", json=case.over)
    assert_error(over, 422, "validation_error", case.message)
    assert await stored(client) == 0
    under = await client.post("/v1/batches", json=case.under)
    assert under.status_code == 201, under.text
    assert await stored(client) == 1


async def test_request_body_size(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    over = await client.post("/v1/batches", content=sized_body(4097), headers=headers)
    assert_error(over, 413, "payload_too_large", "MAX_REQUEST_BYTES (4096 bytes)")

    async def chunks(body: bytes) -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    chunked = await client.post("/v1/batches", content=chunks(sized_body(4097)), headers=headers)
    assert_error(chunked, 413, "payload_too_large", "MAX_REQUEST_BYTES (4096 bytes)")
    assert await stored(client) == 0
    under = await client.post("/v1/batches", content=sized_body(4096), headers=headers)
    assert under.status_code == 201, under.text
    under = await client.post("/v1/batches", content=chunks(sized_body(4096)), headers=headers)
    assert under.status_code == 201, under.text
    assert await stored(client) == 2


async def test_idempotency_key_length(client: httpx.AsyncClient) -> None:
    over = await client.post("/v1/batches", json=batch(), headers={"Idempotency-Key": "k" * 256})
    assert_error(over, 422, "validation_error", "idempotency-key: ")
    assert await stored(client) == 0
    under = await client.post("/v1/batches", json=batch(), headers={"Idempotency-Key": "k" * 255})
    assert under.status_code == 201, under.text


async def test_query_parameters(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/batches", params={"limit": 1000})).status_code == 200
    assert_error(await client.get("/v1/batches", params={"limit": 1001}), 422, "validation_error", "limit: ")
    unknown = await client.get("/v1/batches", params={"stauts": "running", "limit": 5, "x": 1})
    assert_error(unknown, 422, "validation_error", "unknown query parameter(s): stauts, x")
    unknown = await client.get("/v1/jobs", params={"order": "asc"})
    assert_error(unknown, 422, "validation_error", "unknown query parameter(s): order")


HOSTILE_BODIES = {
    "NaN in metadata": (b'{"k": NaN}', "metadata: contains NaN or an infinite number"),
    "a float overflow in metadata": (b'{"k": 1e400}', "metadata: contains NaN or an infinite number"),
    "a lone surrogate in metadata": (
        b'{"k": "\\ud800"}',
        "metadata: contains a lone UTF-16 surrogate (\\ud800)",
    ),
    "a lone surrogate in a metadata key": (b'{"\\udfff": 1}', "metadata: contains a lone UTF-16 surrogate"),
}


@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
async def test_values_json_cannot_hold_are_refused(client: httpx.AsyncClient, name: str) -> None:
    metadata, expected = HOSTILE_BODIES[name]
    body = (
        b'{"provider": "simulator", "requests": [{"custom_id": "a", "params": {}}], "metadata": '
        + metadata
        + b"}"
    )
    response = await client.post("/v1/batches", content=body, headers={"content-type": "application/json"})
    assert_error(response, 422, "validation_error", expected)
    infinite_params = (
        b'{"provider": "simulator", "requests": [{"custom_id": "a", "params": {"t": Infinity}}]}'
    )
    response = await client.post(
        "/v1/batches", content=infinite_params, headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "validation_error", "requests[0] (custom_id 'a').params: contains NaN")
    assert await stored(client) == 0
    surrogate_pair = (  # an escaped pair is one valid character
        b'{"provider": "simulator", "requests": [{"custom_id": "a", "params": {}}], '
        b'"metadata": {"e": "\\ud83d\\ude00"}}'
    )
    response = await client.post(
        "/v1/batches", content=surrogate_pair, headers={"content-type": "application/json"}
    )
    assert response.status_code == 201 and response.json()["metadata"] == {"e": "😀"}


@pytest.mark.parametrize("depth", [100, 900, 100_000])
async def test_deeply_nested_bodies_get_4xx_never_500(make_settings: Any, depth: int) -> None:
    """Deep enough and Python's own JSON parser gives up (400); less deep and our check refuses it
    (422). Either way the answer is an error in the envelope, not a crash. (Default limits here.)"""
    deep = b"[" * depth + b"]" * depth
    async with (
        app_in_loop(make_settings(), run_engine=False) as app,
        httpx.AsyncClient(base_url=app.url, timeout=30) as client,
    ):
        for body in (
            b'{"provider": "simulator", "requests": [{"custom_id": "a", "params": {"x": ' + deep + b"}}]}",
            b'{"provider": "simulator", "requests": [{"custom_id": "a", "params": {}}], "metadata": {"x": '
            + deep
            + b"}}",
        ):
            response = await client.post(
                "/v1/batches", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code in (400, 422), response.text
            assert response.json()["error"]["type"] in ("invalid_request", "validation_error")
        assert await stored(client) == 0


async def test_a_nul_in_the_url_is_refused(client: httpx.AsyncClient) -> None:
    for path in ("/v1/batches/job_%00", "/v1/jobs?job_type=%00", "/v1/files?filename=a%00b"):
        assert_error(await client.get(path), 400, "invalid_request", "NUL")
    control = await client.post("/v1/batches", json=batch(callback_url=CALLBACK + "\n"))
    assert_error(control, 422, "validation_error", "callback_url: contains control characters")


# --- the pure checks --------------------------------------------------------------------------------


def test_depth_check_does_not_recurse() -> None:
    deep: list[Any] = []
    for _ in range(1_000_000):
        deep = [deep]
    with pytest.raises(LimitExceeded, match="nested deeper than 64 levels"):
        check_json("input", deep, 64)
    check_json("input", nested(64), 64)
    check_json("input", "scalar", 0)


def test_metadata_checks_name_field_and_setting() -> None:
    with pytest.raises(LimitExceeded) as raised:
        check_metadata({"a" * 40: 1}, max_keys=4, max_key_length=16, max_bytes=100, max_depth=8)
    assert str(raised.value) == (
        f"metadata: key {'a' * 32!r}… is 40 characters long; at most 16 are allowed (MAX_METADATA_KEY_LENGTH)"
    )


def test_a_deep_line_of_a_batch_file_is_a_validation_error() -> None:
    line = b'{"custom_id": "a", "params": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with pytest.raises(BatchValidationError, match="line 3"):
        parse_request_line(line, 3, openai_endpoint=None)
    line = b'{"custom_id": "a", "params": ' + json.dumps(nested(65)).encode() + b"}"
    with pytest.raises(BatchValidationError, match="nested deeper than 64 levels"):
        parse_request_line(line, 3, openai_endpoint=None)
