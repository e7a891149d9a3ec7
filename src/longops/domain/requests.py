"""Validation of the requests of a new batch (DESIGN §5 "Requests").

Input is checked whole before anything is stored; the first problem is reported with the request's
index and ``custom_id`` so a user can find it in a file of a million lines.

A batch has one ``endpoint``: the provider API every request is a body for. OpenAI-family
providers take one of :data:`OPENAI_ENDPOINTS` (default ``/v1/chat/completions``) and also accept
OpenAI batch lines ``{"custom_id", "method", "url", "body"}``, whose ``url`` must be the batch's
endpoint; Anthropic-protocol providers take only :data:`ANTHROPIC_ENDPOINT`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from longops.domain.limits import DEFAULT_MAX_JSON_DEPTH, LimitExceeded, check_json

# Always applied with ``fullmatch``: ``^…$`` with ``match`` would accept a trailing newline.
CUSTOM_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
ANTHROPIC_ENDPOINT = "/v1/messages"
OPENAI_ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions")


class BatchValidationError(ValueError):
    """Invalid batch input; ``field`` is the JSON path of the offending value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class BatchRequest:
    custom_id: str
    params_json: str  # the provider request body, serialized once, stored and sent as is

    @property
    def size_bytes(self) -> int:
        return len(self.params_json.encode())


def checked_endpoint(requested: object, endpoints: tuple[str, ...], provider: str) -> str:
    """The batch's endpoint: ``requested``, or the provider's default (its first) when absent."""
    if requested is None:
        return endpoints[0]
    if not isinstance(requested, str) or requested not in endpoints:
        allowed = ", ".join(endpoints)
        raise BatchValidationError(
            "endpoint", f"{requested!r} is not an endpoint of provider {provider!r}; use one of {allowed}"
        )
    return requested


def _where(index: int, custom_id: object) -> str:
    if isinstance(custom_id, str):
        return f"requests[{index}] (custom_id {custom_id!r})"
    return f"requests[{index}]"


def parse_requests(
    raw: Any,
    *,
    openai_endpoint: str | None,
    max_requests: int,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> list[BatchRequest]:
    """Validate raw ``requests`` and return them normalized to ``custom_id`` + ``params``.

    With an ``openai_endpoint`` (OpenAI-family providers) an OpenAI batch line ``{custom_id,
    method, url, body}`` whose ``url`` is that endpoint is accepted and its ``body`` becomes
    ``params``. ``params`` may nest at most ``max_depth`` levels.
    """
    if not isinstance(raw, list):
        raise BatchValidationError("requests", "must be a list of requests")
    if not raw:
        raise BatchValidationError("requests", "must contain at least one request")
    if len(raw) > max_requests:
        raise BatchValidationError(
            "requests", f"has {len(raw)} requests; at most {max_requests} are allowed (MAX_BATCH_REQUESTS)"
        )
    seen: set[str] = set()
    parsed: list[BatchRequest] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise BatchValidationError(f"requests[{index}]", "must be an object with custom_id and params")
        where = _where(index, entry.get("custom_id"))
        custom_id = _checked_custom_id(entry.get("custom_id"), where)
        if custom_id in seen:
            raise BatchValidationError(f"{where}.custom_id", "is a duplicate: custom_id must be unique")
        seen.add(custom_id)
        params = _params_of(entry, where, openai_endpoint, max_depth)
        parsed.append(BatchRequest(custom_id, json.dumps(params, separators=(",", ":"))))
    return parsed


def _checked_custom_id(custom_id: object, where: str) -> str:
    if not isinstance(custom_id, str) or not CUSTOM_ID_PATTERN.fullmatch(custom_id):
        raise BatchValidationError(f"{where}.custom_id", "must be a string matching ^[A-Za-z0-9_-]{1,64}$")
    return custom_id


def parse_request_line(
    line: bytes, number: int, *, openai_endpoint: str | None, max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> BatchRequest | None:
    """One line of a JSONL batch file (``number`` counts from 1) as a request; None for a blank line.

    The same rules as :func:`parse_requests` apply to each line; uniqueness of ``custom_id`` across
    lines is the caller's to check. Errors name the line (``line 17 (custom_id 'a').params: …``).
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchValidationError(f"line {number}", f"is not valid UTF-8 (byte {exc.start + 1})") from None
    if number == 1:
        text = text.removeprefix("\ufeff")
    if not text.strip():
        return None
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BatchValidationError(
            f"line {number}", f"is not valid JSON: {exc.msg} (column {exc.colno})"
        ) from None
    except RecursionError:
        raise BatchValidationError(f"line {number}", "is nested too deeply to parse") from None
    if not isinstance(entry, dict):
        raise BatchValidationError(f"line {number}", "must be a JSON object with custom_id and params")
    raw_id = entry.get("custom_id")
    where = f"line {number} (custom_id {raw_id!r})" if isinstance(raw_id, str) else f"line {number}"
    custom_id = _checked_custom_id(raw_id, where)
    params = _params_of(entry, where, openai_endpoint, max_depth)
    return BatchRequest(custom_id, json.dumps(params, separators=(",", ":")))


def _params_of(
    entry: dict[str, Any], where: str, openai_endpoint: str | None, max_depth: int
) -> dict[str, Any]:
    params = _raw_params_of(entry, where, openai_endpoint)
    field = f"{where}.{'params' if 'params' in entry else 'body'}"
    try:
        check_json(field, params, max_depth, text=False)  # text: sent to the provider, never shown back
    except LimitExceeded as exc:
        raise BatchValidationError(exc.field, exc.message) from None
    return params


def _raw_params_of(entry: dict[str, Any], where: str, openai_endpoint: str | None) -> dict[str, Any]:
    extra = set(entry) - {"custom_id", "params", "method", "url", "body"}
    if extra:
        raise BatchValidationError(f"{where}", f"unknown field(s): {', '.join(sorted(extra))}")
    if "params" in entry:
        params = entry["params"]
        if not isinstance(params, dict):
            raise BatchValidationError(f"{where}.params", "must be an object (the provider's request body)")
        return params
    if openai_endpoint is not None and "body" in entry:
        if entry.get("method", "POST") != "POST":
            raise BatchValidationError(f"{where}.method", "must be POST")
        url = entry.get("url", openai_endpoint)
        if url != openai_endpoint:
            raise BatchValidationError(
                f"{where}.url",
                f"is {url!r} but the batch's endpoint is {openai_endpoint!r}: every request of a batch "
                "goes to its endpoint (set the batch's endpoint, or split the file)",
            )
        body = entry["body"]
        if not isinstance(body, dict):
            raise BatchValidationError(f"{where}.body", "must be an object")
        return body
    raise BatchValidationError(f"{where}.params", "is required")
