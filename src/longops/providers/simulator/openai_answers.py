"""The simulator's OpenAI answers: one request body in, the endpoint's response body out.

Shared by the Batches wire (:mod:`.openai_wire`) and meant for live endpoints too: a live
``/v1/chat/completions`` answers with :func:`answer` of :func:`derive_openai_item` of its body.

Deterministic, as on the Anthropic wire: the answer echoes the text of the request (the last user
message, the Responses ``input``, the completion ``prompt``, the embedding ``input``), cut to
``max_tokens * 4`` characters (then ``finish_reason`` is ``length``), with about one token per
four characters. Markers work as there (:func:`~.state.derive_item`). A body without what its
endpoint requires errors the item with ``invalid_request_error``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from longops.providers.simulator.state import SimItem, derive_outcome

CHAT, RESPONSES, EMBEDDINGS, COMPLETIONS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/completions",
)
ENDPOINTS = (CHAT, RESPONSES, EMBEDDINGS, COMPLETIONS)
_DEFAULT_MAX_TOKENS = 4096
_EMBEDDING_DIMENSIONS = 8


def _tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


def _text(content: Any) -> str:
    """The text of a string, a list of strings, or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def _last_user(messages: list[Any]) -> str:
    return next(
        (
            _text(m.get("content"))
            for m in reversed(messages)
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        "",
    )


def _invalid(custom_id: str, problem: str) -> SimItem:
    return SimItem(custom_id, "errored", "invalid_request_error", problem, "", "", 1, 1)


def derive_openai_item(custom_id: str, endpoint: str, body: Any, error_rate: float) -> SimItem:
    """Reduce one request body of ``endpoint`` to its outcome (the body is not kept)."""
    if not isinstance(body, dict):
        return _invalid(custom_id, "body: Input should be an object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _invalid(custom_id, "model: you must provide a model parameter")
    if endpoint == CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _invalid(custom_id, "messages: Input should be a non-empty list")
        text, chars = (
            _last_user(messages),
            sum(len(_text(m.get("content"))) for m in messages if isinstance(m, dict)),
        )
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
    elif endpoint == RESPONSES:
        raw = body.get("input")
        if not isinstance(raw, str | list) or not raw:
            return _invalid(custom_id, "input: Input should be a string or a non-empty list")
        text = raw if isinstance(raw, str) else _last_user(raw) or _text(raw)
        chars, limit = len(_text(raw) if isinstance(raw, list) else raw), body.get("max_output_tokens")
    elif endpoint in (EMBEDDINGS, COMPLETIONS):
        field = "input" if endpoint == EMBEDDINGS else "prompt"
        raw = body.get(field)
        if not isinstance(raw, str | list) or not raw:
            return _invalid(custom_id, f"{field}: Input should be a string or a non-empty list")
        text = _text(raw)
        chars, limit = len(text), body.get("max_tokens")
    else:
        return _invalid(custom_id, f"url: {endpoint} is not supported")
    max_tokens = (
        limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else _DEFAULT_MAX_TOKENS
    )
    outcome, error_type, error_message = derive_outcome(custom_id, text, error_rate)
    return SimItem(custom_id, outcome, error_type, error_message, model, text, _tokens(chars), max_tokens)


def answer(endpoint: str, item: SimItem, key: str, created: int) -> dict[str, Any]:
    """The endpoint's response body for a succeeded item. ``key`` makes the ids unique and stable
    (e.g. ``"{batch_id}/{custom_id}"``); ``created`` is the Unix time the answer shows."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    if endpoint == EMBEDDINGS:
        vector = [int(digest[i : i + 4], 16) / 65535 - 0.5 for i in range(0, 4 * _EMBEDDING_DIMENSIONS, 4)]
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": vector}],
            "model": item.model,
            "usage": {"prompt_tokens": item.input_tokens, "total_tokens": item.input_tokens},
        }
    text, finish = item.text, "stop"
    if len(text) > item.max_tokens * 4:
        text, finish = text[: item.max_tokens * 4], "length"
    output_tokens = _tokens(len(text))
    if endpoint == RESPONSES:
        return {
            "id": f"resp_{digest[:32]}",
            "object": "response",
            "created_at": created,
            "status": "completed" if finish == "stop" else "incomplete",
            "incomplete_details": None if finish == "stop" else {"reason": "max_output_tokens"},
            "model": item.model,
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{digest[:32]}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": item.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": item.input_tokens + output_tokens,
            },
        }
    usage = {
        "prompt_tokens": item.input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": item.input_tokens + output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    if endpoint == COMPLETIONS:
        return {
            "id": f"cmpl-{digest[:29]}",
            "object": "text_completion",
            "created": created,
            "model": item.model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
        }
    return {
        "id": f"chatcmpl-{digest[:29]}",
        "object": "chat.completion",
        "created": created,
        "model": item.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": None,
    }
